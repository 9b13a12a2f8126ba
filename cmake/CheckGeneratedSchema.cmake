# Fails the build when the committed generated header is not what flatc makes of the schema.
execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${GENERATED} ${COMMITTED} RESULT_VARIABLE differs)
if(differs)
  message(FATAL_ERROR "schema/moe_model_generated.h is stale: it differs from what flatc makes of schema/moe_model.fbs.\n"
                      "Run: cmake --build <build dir> --target regenerate_schema   and commit the result.")
endif()
file(TOUCH ${STAMP})
