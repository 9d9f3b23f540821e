# ctnn-train on SYNTHETIC data, then ctnn-eval on its final checkpoint: same accuracy line. Then
# the run's resume snapshot: ctnn-eval and ctnn-train --load take its weights (after the one
# epoch they are the final weights, so the accuracy is the same again). The pictures both
# programs draw (resnet50_synthetic_train.svg, confusion.svg) stay for the ctnn_*_svg tests.
file(REMOVE_RECURSE ${WORK_DIR})
execute_process(COMMAND ${TRAIN} --model resnet50 --synthetic 300 --batch-size 50 --epochs 1 --seed 4 --out ${WORK_DIR}
                RESULT_VARIABLE rc OUTPUT_VARIABLE train_out ERROR_VARIABLE train_err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ctnn-train failed (${rc}): ${train_out}${train_err}")
endif()
if(NOT EXISTS ${WORK_DIR}/resnet50_synthetic_final.ckpt)
  message(FATAL_ERROR "ctnn-train wrote no resnet50_synthetic_final.ckpt")
endif()
execute_process(COMMAND ${EVAL} --model resnet50 --checkpoint ${WORK_DIR}/resnet50_synthetic_final.ckpt --synthetic 300 --seed 4
                        --svg ${WORK_DIR}/confusion.svg
                RESULT_VARIABLE rc OUTPUT_VARIABLE eval_out ERROR_VARIABLE eval_err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ctnn-eval failed (${rc}): ${eval_out}${eval_err}")
endif()
# As main.py prints it ('{} %'.format(100 * correct / total)): a float as Python writes it,
# "50.0 %" where a plain C++ stream would write "50 %".
string(REGEX MATCH "Accuracy of the model on the test images: [0-9]+\\.[0-9]+ %" a "${train_out}")
string(REGEX MATCH "Accuracy of the model on the test images: [0-9]+\\.[0-9]+ %" b "${eval_out}")
if(a STREQUAL "" OR NOT a STREQUAL b)
  message(FATAL_ERROR "accuracy differs: ctnn-train '${a}', ctnn-eval '${b}'")
endif()
string(FIND "${eval_out}" "confusion matrix" at)
if(at LESS 0)
  message(FATAL_ERROR "ctnn-eval printed no confusion matrix:\n${eval_out}")
endif()
foreach(picture resnet50_synthetic_train.svg confusion.svg)
  if(NOT EXISTS ${WORK_DIR}/${picture})
    message(FATAL_ERROR "no ${picture} was written:\n${train_out}\n${eval_out}")
  endif()
endforeach()
file(READ ${WORK_DIR}/resnet50_synthetic_train_log.csv log)
string(REGEX MATCH "Accuracy of the model on the test images: ([0-9.]+) %" unused "${a}")
if(NOT log MATCHES "\n# test accuracy,${CMAKE_MATCH_1}\n")
  message(FATAL_ERROR "the loss log's accuracy is not the printed ${CMAKE_MATCH_1}:\n${log}")
endif()
message(STATUS "both report: ${a}")

execute_process(COMMAND ${EVAL} --model resnet50 --checkpoint ${WORK_DIR}/resnet50_synthetic_resume.ckpt --synthetic 300 --seed 4
                RESULT_VARIABLE rc OUTPUT_VARIABLE snap_out ERROR_VARIABLE snap_err)
string(REGEX MATCH "Accuracy of the model on the test images: [0-9]+\\.[0-9]+ %" c "${snap_out}")
if(NOT rc EQUAL 0 OR NOT c STREQUAL a OR NOT snap_out MATCHES "resnet50_synthetic_resume.ckpt: a ctnn-train resume snapshot after step 6")
  message(FATAL_ERROR "ctnn-eval on the resume snapshot (${rc}): '${c}' against '${a}':\n${snap_out}${snap_err}")
endif()
execute_process(COMMAND ${TRAIN} --model resnet50 --synthetic 50 --batch-size 10 --seed 4 --max-steps 1
                        --load ${WORK_DIR}/resnet50_synthetic_resume.ckpt --out ${WORK_DIR}/loaded
                RESULT_VARIABLE rc OUTPUT_VARIABLE load_out ERROR_VARIABLE load_err)
if(NOT rc EQUAL 0 OR NOT load_out MATCHES "resume snapshot after step 6 \\(epoch 2, 0 batches into it\\): loaded its weights.*Loaded ")
  message(FATAL_ERROR "ctnn-train --load with the resume snapshot (${rc}):\n${load_out}${load_err}")
endif()
message(STATUS "the resume snapshot's weights: same accuracy in ctnn-eval, taken by ctnn-train --load")
