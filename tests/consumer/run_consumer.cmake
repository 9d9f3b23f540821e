# Installs the ctnn build at CTNN_BUILD_DIR into WORK_DIR/prefix, then builds and runs the
# consumer project against that prefix (find_package), and again with ctnn as a subdirectory
# (add_subdirectory of CTNN_SOURCE_DIR), with CXX_COMPILER; and, when OTHER_CXX_COMPILER is
# given (clang++ beside g++), the installed route once more with it; and last without CMake and
# without OpenMP, as README's "Without CMake" command less -fopenmp (EIGEN_INCLUDE_DIR given),
# where ctnn must still build warning-free and train on one thread. Any failing step fails the
# test, as does a README.md whose first program is no longer main.cpp.
file(REMOVE_RECURSE ${WORK_DIR})
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install_consumer: step failed (${rc}): ${ARGN}")
  endif()
endfunction()
file(READ ${CTNN_SOURCE_DIR}/README.md readme)
file(READ ${CONSUMER_SOURCE_DIR}/main.cpp program)
string(FIND "${readme}" "```cpp\n${program}```" at)
if(at EQUAL -1)
  message(FATAL_ERROR "install_consumer: README.md no longer shows tests/consumer/main.cpp as its first program")
endif()
step(${CMAKE_COMMAND} --install ${CTNN_BUILD_DIR} --prefix ${WORK_DIR}/prefix)
foreach(route installed subdirectory other)
  if(route STREQUAL "subdirectory")
    set(args -DCTNN_SOURCE_DIR=${CTNN_SOURCE_DIR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
  elseif(route STREQUAL "installed")
    set(args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_CXX_COMPILER=${CXX_COMPILER})
  elseif(OTHER_CXX_COMPILER)
    set(args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_CXX_COMPILER=${OTHER_CXX_COMPILER})
  else()
    continue()
  endif()
  step(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/${route} -DCMAKE_BUILD_TYPE=Release ${args})
  step(${CMAKE_COMMAND} --build ${WORK_DIR}/${route})
  step(${WORK_DIR}/${route}/consumer)
endforeach()
# The component mpi: found where ctnn was installed with ctnn::mpi (MPI_INSTALLED), else refused
# with the reason (configure only).
file(WRITE ${WORK_DIR}/mpi_component/CMakeLists.txt
     "cmake_minimum_required(VERSION 3.21)\nproject(ctnn_mpi_component LANGUAGES CXX)\n"
     "find_package(ctnn 0.1 REQUIRED COMPONENTS mpi)\n"
     "if(NOT TARGET ctnn::mpi)\n  message(FATAL_ERROR \"ctnn::mpi missing\")\nendif()\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/mpi_component -B ${WORK_DIR}/mpi_component/build
                        -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(MPI_INSTALLED AND NOT rc EQUAL 0)
  message(FATAL_ERROR "install_consumer: find_package(ctnn COMPONENTS mpi) failed:\n${out}")
elseif(NOT MPI_INSTALLED AND (rc EQUAL 0 OR NOT out MATCHES "the component mpi \\(ctnn::mpi\\) is not available"))
  message(FATAL_ERROR "install_consumer: find_package(ctnn COMPONENTS mpi) without ctnn::mpi installed:\n${out}")
endif()
# By hand, no OpenMP: a program that does not link OpenMP must not get a warning per `omp` loop.
step(${CXX_COMPILER} -std=c++20 -O2 -Wall -Wextra -Wshadow -Wpedantic -Werror -I${WORK_DIR}/prefix/include
     -isystem ${EIGEN_INCLUDE_DIR} ${CONSUMER_SOURCE_DIR}/main.cpp -o ${WORK_DIR}/consumer_serial)
step(${WORK_DIR}/consumer_serial)
