# Fails the build when a committed generated file (WHAT) is not what its generator makes
# now (GENERATED): the schema's header from flatc, the Unicode tables from utf8proc.
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${GENERATED} ${COMMITTED} RESULT_VARIABLE differs)
if(differs)
  message(FATAL_ERROR "${WHAT} is stale: it differs from what its generator makes now.\n"
                      "Run: cmake --build <build dir> --target ${REGENERATE}   and commit the result.")
endif()
file(TOUCH ${STAMP})
