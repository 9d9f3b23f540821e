# ctnn-train with a learning rate that blows the weights up (1e30): it must stop with exit
# status 1 and one line naming the step, the layer where the first NaN or infinity appeared and
# the last good checkpoint, write no final checkpoint, and leave the resume snapshot of the
# last good step byte for byte as a clean run stopped at that step writes it.
file(REMOVE_RECURSE ${WORK_DIR})
set(args --model resnet50 --synthetic 4 --batch-size 2 --lr 1e30 --checkpoint-every 1 --seed 3 --threads 1)
execute_process(COMMAND ${TRAIN} ${args} --out ${WORK_DIR}/nan
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message(STATUS "exit status ${rc}: ${err}")
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "expected exit status 1, got ${rc}:\n${out}${err}")
endif()
set(number "[0-9]+")
set(kind "(NaN|inf|-inf)")
if(NOT err MATCHES "^ctnn-train: step (${number}) \\(epoch 1, batch ${number} of 2\\): (loss|gradient) is ${kind}[^;]*; first non-finite (value \\(${kind}\\) in the output of|gradient going back from the loss in) [a-z0-9_.]+ \\([A-Za-z0-9]+\\)[^\n]*; stopped before the optimizer step: the last good checkpoint is [^\n]*resnet50_synthetic_resume.ckpt \\(after step (${number})\\)\n$")
  message(FATAL_ERROR "unexpected message:\n${err}")
endif()
set(good_step ${CMAKE_MATCH_6})
if(EXISTS ${WORK_DIR}/nan/resnet50_synthetic_final.ckpt)
  message(FATAL_ERROR "a final checkpoint was written after the NaN")
endif()
execute_process(COMMAND ${TRAIN} ${args} --max-steps ${good_step} --out ${WORK_DIR}/clean
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the clean run of ${good_step} steps failed:\n${out}${err}")
endif()
file(SHA256 ${WORK_DIR}/nan/resnet50_synthetic_resume.ckpt after_nan)
file(SHA256 ${WORK_DIR}/clean/resnet50_synthetic_resume.ckpt clean)
if(NOT after_nan STREQUAL clean)
  message(FATAL_ERROR "the snapshot left by the stopped run is not the snapshot of step ${good_step}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
message(STATUS "stopped at the NaN; resnet50_synthetic_resume.ckpt is the clean snapshot of step ${good_step}")
