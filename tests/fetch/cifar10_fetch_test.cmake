# The `cifar10` target's script (cmake/cifar10.cmake), offline: a CIFAR-10 look-alike archive in
# the official layout (cifar-10-batches-bin/ with six batch files of two records each) is built
# here and served as file://, with its own checksum. CASE picks what must happen:
#   success      unpacked byte for byte, nothing temporary left; a second run downloads nothing
#   checksum     a wrong checksum: one message, non-zero exit, no data directory, no leftovers
#   unreachable  a URL that cannot be read: likewise
#   damaged      an archive cut short (its own checksum, so the download passes): likewise
#   incomplete   a valid archive without test_batch.bin: likewise
# Run as: cmake -DSCRIPT=cmake/cifar10.cmake -DWORK_DIR=<scratch> -DCASE=<case> -P cifar10_fetch_test.cmake
cmake_minimum_required(VERSION 3.21)

file(REMOVE_RECURSE "${WORK_DIR}")
set(stage "${WORK_DIR}/stage")
set(data "${WORK_DIR}/data")  # where the fetched set goes: ${data}/cifar-10-batches-bin
file(MAKE_DIRECTORY "${stage}/cifar-10-batches-bin" "${data}")

# Two 3,073-byte records per file (label byte, then 3,072 pixel bytes), different in every file.
string(REPEAT "x" 3072 pixels)
set(batches data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin)
set(label 1)
foreach(f IN LISTS batches)
  if(CASE STREQUAL "incomplete" AND f STREQUAL "test_batch.bin")
    continue()
  endif()
  math(EXPR next "${label} + 1")
  string(ASCII ${label} a)  # label bytes 1..7 (CMake strings cannot hold a 0 byte)
  string(ASCII ${next} b)
  file(WRITE "${stage}/cifar-10-batches-bin/${f}" "${a}${pixels}${b}${pixels}")
  set(label ${next})
endforeach()
file(WRITE "${stage}/cifar-10-batches-bin/batches.meta.txt" "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
execute_process(COMMAND "${CMAKE_COMMAND}" -E chdir "${stage}"
                        "${CMAKE_COMMAND}" -E tar czf "${WORK_DIR}/cifar-10-binary.tar.gz" cifar-10-batches-bin
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "test setup: cannot build the archive")
endif()
set(archive "${WORK_DIR}/cifar-10-binary.tar.gz")
if(CASE STREQUAL "damaged")
  # The first half of the gzip stream: a file with a valid checksum of its own that cannot unpack.
  file(SIZE "${archive}" size)
  math(EXPR half "${size} / 2")
  execute_process(COMMAND head -c ${half} "${archive}" OUTPUT_FILE "${WORK_DIR}/cut.tar.gz" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "test setup: cannot cut the archive")
  endif()
  set(archive "${WORK_DIR}/cut.tar.gz")
endif()
file(MD5 "${archive}" md5)
set(url "file://${archive}")
set(hash "MD5=${md5}")
if(CASE STREQUAL "checksum")
  set(hash "MD5=0123456789abcdef0123456789abcdef")
elseif(CASE STREQUAL "unreachable")
  set(url "file://${WORK_DIR}/no-such-dir/cifar-10-binary.tar.gz")
endif()

function(fetch url out_rc out_text)
  execute_process(COMMAND "${CMAKE_COMMAND}" "-DURL=${url}" "-DHASH=${hash}" "-DDEST=${data}/cifar-10-batches-bin"
                          -P "${SCRIPT}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "cifar10.cmake exited with ${rc}; it printed:\n${out}${err}")
  set(${out_rc} ${rc} PARENT_SCOPE)
  set(${out_text} "${out}${err}" PARENT_SCOPE)
endfunction()

# Whatever happened, nothing half-done may be left beside the data directory.
function(expect_no_leftovers)
  file(GLOB left LIST_DIRECTORIES true "${data}/.*")
  if(left)
    message(FATAL_ERROR "temporary files left in ${data}: ${left}")
  endif()
endfunction()

fetch("${url}" rc text)
expect_no_leftovers()
if(CASE STREQUAL "success")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the fetch failed")
  endif()
  foreach(f IN LISTS batches ITEMS batches.meta.txt)
    file(SHA256 "${stage}/cifar-10-batches-bin/${f}" want)
    if(NOT EXISTS "${data}/cifar-10-batches-bin/${f}")
      message(FATAL_ERROR "${f} was not unpacked")
    endif()
    file(SHA256 "${data}/cifar-10-batches-bin/${f}" got)
    if(NOT got STREQUAL want)
      message(FATAL_ERROR "${f} differs from the archived file")
    endif()
  endforeach()
  if(NOT text MATCHES "Downloading file://")
    message(FATAL_ERROR "the first run did not say it downloads")
  endif()
  # Once there, the data set is not fetched again: a second run succeeds with the URL unreachable.
  fetch("file://${WORK_DIR}/no-such-dir/x.tar.gz" rc text)
  if(NOT rc EQUAL 0 OR text MATCHES "Downloading" OR NOT text MATCHES "CIFAR-10 is in ")
    message(FATAL_ERROR "the second run did not find the data set in place")
  endif()
  message(STATUS "fetched once, verified, unpacked and found again")
  return()
endif()

if(rc EQUAL 0)
  message(FATAL_ERROR "the fetch succeeded where it must fail (case ${CASE})")
endif()
if(EXISTS "${data}/cifar-10-batches-bin")
  message(FATAL_ERROR "a failed fetch left ${data}/cifar-10-batches-bin")
endif()
# One message: a single CMake error block, saying what went wrong.
string(REGEX MATCHALL "CMake Error" errors "${text}")
list(LENGTH errors n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one error message, got ${n}")
endif()
if(CASE STREQUAL "checksum")
  set(expect "\\([0-9]+ bytes\\) has MD5 ${md5}, not the expected 0123456789abcdef0123456789abcdef \\(CTNN_CIFAR10_HASH\\)")
elseif(CASE STREQUAL "unreachable")
  set(expect "cannot download file://.*/no-such-dir/cifar-10-binary.tar.gz: .*\\(error [1-9][0-9]*\\): check the address")
elseif(CASE STREQUAL "damaged")
  set(expect "matches its checksum but cannot be unpacked.*: it is damaged")
elseif(CASE STREQUAL "incomplete")
  set(expect "is not a complete CIFAR-10 binary version: test_batch.bin is missing")
else()
  message(FATAL_ERROR "unknown CASE '${CASE}'")
endif()
string(REGEX REPLACE "\n *" " " flat "${text}")  # CMake wraps and indents long messages
if(NOT flat MATCHES "CIFAR-10: .*${expect}")
  message(FATAL_ERROR "the message does not say '${expect}'")
endif()
message(STATUS "case ${CASE}: one clear message, exit ${rc}, nothing left behind")
