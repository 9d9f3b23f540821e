# Runs make_seed_corpus.py (Python's pickles, PyTorch's checkpoints) for the seed corpora. The
# seeds are optional: if python3 fails, the build goes on with ctnn's own seeds and says so.
#   cmake -DPYTHON=<python3> -DSCRIPT=<make_seed_corpus.py> -DSEEDS=<dir> -P python_seeds.cmake
execute_process(COMMAND ${PYTHON} ${SCRIPT} ${SEEDS} RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(WARNING "make_seed_corpus.py failed (${result}): the fuzzers start without Python's and PyTorch's seeds")
endif()
