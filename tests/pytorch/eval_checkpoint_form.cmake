# ctnn-eval on one of make_checkpoint_forms.py's ResNet50 files (tests' label parity): it must
# print the expected note (or, with -DFAIL=ON, fail with the expected message), and otherwise
# exactly what it prints for the REFERENCE file (the same weights saved plainly, or PyTorch's own
# float32 conversion of them): the same accuracy, per class and confusion matrix.
#   cmake -DEVAL=... -DDIR=... -DFILE=... [-DREFERENCE=...] [-DOPTIONS=a;b] -DEXPECT=regex [-DFAIL=ON] -P this
if(EXISTS ${DIR}/SKIPPED)
  file(READ ${DIR}/SKIPPED reason)
  message("CTNN_FORMS_SKIPPED: ${reason}")
  return()
endif()
set(common --model resnet50 --synthetic 250 --seed 1 --threads 1)
execute_process(COMMAND ${EVAL} ${common} --checkpoint ${DIR}/${FILE} ${OPTIONS}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(FAIL)
  if(rc EQUAL 0 OR NOT err MATCHES "${EXPECT}")
    message(FATAL_ERROR "expected ctnn-eval to fail saying '${EXPECT}' (exit ${rc})")
  endif()
  return()
endif()
if(NOT rc EQUAL 0 OR NOT out MATCHES "${EXPECT}")
  message(FATAL_ERROR "expected ctnn-eval to succeed saying '${EXPECT}' (exit ${rc})")
endif()
execute_process(COMMAND ${EVAL} ${common} --checkpoint ${DIR}/${REFERENCE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE reference ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ctnn-eval failed on ${REFERENCE}: ${err}")
endif()
# Everything but the notes ("<file>: using ...") must be the reference's, character for character.
string(REGEX REPLACE "[^\n]*${FILE}: [^\n]*\n" "" results "${out}")
if(NOT results STREQUAL reference)
  message(FATAL_ERROR "ctnn-eval's results differ from those for ${REFERENCE}:\n${reference}")
endif()
string(REGEX MATCH "Accuracy of the model on the test images: [0-9.]+ %" accuracy "${out}")
message(STATUS "same results as ${REFERENCE}: ${accuracy}")
