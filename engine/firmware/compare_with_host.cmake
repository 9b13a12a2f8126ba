# Runs the firmware under qemu and the host engine on the same model and prompt, and
# fails unless both generate the same tokens.
string(REPLACE "|" ";" EMULATOR "${EMULATOR}")
execute_process(COMMAND ${EMULATOR} ${FIRMWARE} OUTPUT_VARIABLE fw_out ERROR_VARIABLE fw_out RESULT_VARIABLE fw_code TIMEOUT 180)
message("${fw_out}")
if(NOT fw_code EQUAL 0)
  message(FATAL_ERROR "firmware exited with ${fw_code}")
endif()
if(NOT fw_out MATCHES "tokens: ([0-9,]+)")
  message(FATAL_ERROR "no tokens in the firmware's output")
endif()
set(fw_tokens ${CMAKE_MATCH_1})
# --f32-activations: the host's int8 x int8 products (VNNI) round differently from the
# Cortex-M's, which widen int8 weights against f32 activations; this asks for the latter.
execute_process(COMMAND ${HOST_INFER} --model ${MODEL} --ids ${PROMPT} -n ${TOKENS} --temp 0 --no-echo --no-stats --f32-activations
                OUTPUT_VARIABLE host_out RESULT_VARIABLE host_code)
string(STRIP "${host_out}" host_tokens)
if(NOT host_code EQUAL 0)
  message(FATAL_ERROR "host moe_infer failed (${host_code})")
endif()
message("host:     ${host_tokens}\nfirmware: ${fw_tokens}")
if(NOT fw_tokens STREQUAL host_tokens)
  message(FATAL_ERROR "the firmware's tokens differ from the host engine's")
endif()
