# Fetches CIFAR-10's binary version into DEST (a .../cifar-10-batches-bin directory) once, run by
# the `cifar10` target (cmake --build build --target cifar10) as
#   cmake -DURL=<url> -DHASH=<ALGO=hex> -DDEST=<dir> -P cifar10.cmake
# URL and HASH come from the cache variables CTNN_CIFAR10_URL and CTNN_CIFAR10_HASH (a mirror, a
# proxy or an offline copy as file:///...). DEST only ever appears complete: the archive is
# downloaded to a temporary name and checked against HASH by file(DOWNLOAD ... EXPECTED_HASH),
# unpacked into a temporary directory by file(ARCHIVE_EXTRACT), its six batch files checked, and
# only then renamed to DEST (a rename within one directory, so a kill at any point leaves DEST
# absent or complete). Every failure is one message and a non-zero exit.
#
# file(DOWNLOAD) and file(ARCHIVE_EXTRACT) stop a script at the first problem with CMake's raw
# report (a checksum "mismatch" even when the server was never reached, libarchive's words for a
# damaged archive), so each runs in a child cmake (this file again, with STEP set) and this
# process turns the outcome into the message.
cmake_minimum_required(VERSION 3.21)

set(ctnn_batches data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)

if(STEP STREQUAL "download")
  # SHOW_PROGRESS goes to stdout, which the parent echoes; errors go to stderr, which it reads.
  file(DOWNLOAD "${URL}" "${FILE}" EXPECTED_HASH "${HASH}" SHOW_PROGRESS STATUS status INACTIVITY_TIMEOUT 60)
  list(GET status 0 code)
  if(NOT code EQUAL 0)  # only reached without a hash mismatch, which file(DOWNLOAD) reports itself
    message(FATAL_ERROR "status: [${status}]")
  endif()
  return()
elseif(STEP STREQUAL "extract")
  file(ARCHIVE_EXTRACT INPUT "${FILE}" DESTINATION "${DIR}")
  return()
endif()

foreach(var URL HASH DEST)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "cifar10.cmake: ${var} is not set (usage: cmake -DURL=... -DHASH=ALGO=hex -DDEST=dir -P cifar10.cmake)")
  endif()
endforeach()
if(NOT HASH MATCHES "^(MD5|SHA1|SHA224|SHA256|SHA384|SHA512|SHA3_224|SHA3_256|SHA3_384|SHA3_512)=([0-9A-Fa-f]+)$")
  message(FATAL_ERROR "CIFAR-10: CTNN_CIFAR10_HASH must be ALGO=hex (e.g. MD5=c32a1d4ab5d03f1284b67883e8d87530), got '${HASH}'")
endif()
set(algo ${CMAKE_MATCH_1})
string(TOLOWER "${CMAKE_MATCH_2}" expected)
get_filename_component(DEST "${DEST}" ABSOLUTE)
get_filename_component(parent "${DEST}" DIRECTORY)
get_filename_component(leaf "${DEST}" NAME)

# What is wrong with a cifar-10-batches-bin directory, or "" when it is complete: the six batch
# files, each a whole number of 3,073-byte records (1 label byte, 3,072 pixel bytes), none empty.
function(ctnn_cifar10_problem dir out)
  set(problem "")
  foreach(f IN LISTS ctnn_batches)
    if(NOT EXISTS "${dir}/${f}" OR IS_DIRECTORY "${dir}/${f}")
      set(problem "${f} is missing")
      break()
    endif()
    file(SIZE "${dir}/${f}" size)
    math(EXPR rest "${size} % 3073")
    if(size EQUAL 0 OR NOT rest EQUAL 0)
      set(problem "${f} has ${size} bytes, not a whole number of 3,073-byte records")
      break()
    endif()
  endforeach()
  set(${out} "${problem}" PARENT_SCOPE)
endfunction()

if(IS_DIRECTORY "${DEST}")
  ctnn_cifar10_problem("${DEST}" problem)
  if(problem STREQUAL "")
    message(STATUS "CIFAR-10 is in ${DEST}")
    return()
  endif()
  # Not ours to delete: it may be the user's own copy, half-unpacked by hand.
  message(FATAL_ERROR "CIFAR-10: ${DEST} exists but is incomplete (${problem}); remove it and build the "
                      "cifar10 target again")
endif()

file(MAKE_DIRECTORY "${parent}")
# Leftovers of a run that was killed: only ever temporary names, never taken for the data set.
file(GLOB stale LIST_DIRECTORIES true "${parent}/.${leaf}.tmp-*" "${parent}/.cifar-10-binary.tar.gz.tmp-*")
if(stale)
  file(REMOVE_RECURSE ${stale})
endif()
string(RANDOM LENGTH 8 tag)
set(archive "${parent}/.cifar-10-binary.tar.gz.tmp-${tag}")
set(unpacked "${parent}/.${leaf}.tmp-${tag}")

# Removes what this run wrote and stops with the message: its arguments, joined (so a message
# must not contain a semicolon, CMake's list separator).
function(ctnn_cifar10_fail)
  string(JOIN "" text ${ARGN})
  file(REMOVE_RECURSE "${archive}" "${unpacked}")
  message(FATAL_ERROR "CIFAR-10: ${text}")
endfunction()

message(STATUS "Downloading ${URL} (checked against ${algo} ${expected})")
execute_process(COMMAND "${CMAKE_COMMAND}" -DSTEP=download "-DURL=${URL}" "-DFILE=${archive}" "-DHASH=${HASH}"
                        -P "${CMAKE_CURRENT_LIST_FILE}"
                RESULT_VARIABLE rc ECHO_OUTPUT_VARIABLE OUTPUT_VARIABLE ignored ERROR_VARIABLE report)
if(NOT rc EQUAL 0)
  # CMake reports the transfer's status as [code;"text"]; code 0 means the bytes arrived and the
  # checksum is what failed.
  set(code "")
  if(report MATCHES "status: \\[([0-9]+);\"([^\"]*)\"\\]")
    set(code ${CMAKE_MATCH_1})
    set(why "${CMAKE_MATCH_2}")
  endif()
  set(size 0)
  if(EXISTS "${archive}")
    file(SIZE "${archive}" size)
  endif()
  if(code STREQUAL "0" OR (code STREQUAL "" AND size GREATER 0))
    file(${algo} "${archive}" actual)
    ctnn_cifar10_fail("the file downloaded from ${URL} (${size} bytes) has ${algo} ${actual}, not the expected "
                      "${expected} (CTNN_CIFAR10_HASH): a wrong or corrupted file, nothing was unpacked")
  elseif(code STREQUAL "")
    string(STRIP "${report}" report)
    ctnn_cifar10_fail("cannot download ${URL}: ${report}")
  else()
    ctnn_cifar10_fail("cannot download ${URL}: ${why} (error ${code}): check the address or the network, or set "
                      "CTNN_CIFAR10_URL to a mirror or to a local copy as file:///path/cifar-10-binary.tar.gz")
  endif()
endif()

execute_process(COMMAND "${CMAKE_COMMAND}" -DSTEP=extract "-DFILE=${archive}" "-DDIR=${unpacked}"
                        -P "${CMAKE_CURRENT_LIST_FILE}"
                RESULT_VARIABLE rc OUTPUT_VARIABLE ignored ERROR_VARIABLE report)
if(NOT rc EQUAL 0)
  set(why "")
  if(report MATCHES "Problem with archive_read[a-z_]*\\(\\): ([^\n]*)")
    set(why " (${CMAKE_MATCH_1})")
  endif()
  ctnn_cifar10_fail("the archive from ${URL} matches its checksum but cannot be unpacked${why}: it is damaged")
endif()
if(NOT IS_DIRECTORY "${unpacked}/cifar-10-batches-bin")
  file(GLOB top RELATIVE "${unpacked}" "${unpacked}/*")
  string(JOIN ", " top ${top})
  ctnn_cifar10_fail("the archive from ${URL} holds no cifar-10-batches-bin/ directory (it holds: ${top}), so "
                    "it is not CIFAR-10's binary version")
endif()
ctnn_cifar10_problem("${unpacked}/cifar-10-batches-bin" problem)
if(NOT problem STREQUAL "")
  ctnn_cifar10_fail("the archive from ${URL} is not a complete CIFAR-10 binary version: ${problem}")
endif()
file(RENAME "${unpacked}/cifar-10-batches-bin" "${DEST}" RESULT renamed)
if(NOT renamed EQUAL 0)
  ctnn_cifar10_fail("cannot move the unpacked data set to ${DEST}: ${renamed}")
endif()
file(REMOVE_RECURSE "${archive}" "${unpacked}")
message(STATUS "CIFAR-10 is in ${DEST}")
