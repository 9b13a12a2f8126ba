# Compiler flags shared by every target of the project, through one INTERFACE target.
#   moe_flags           warnings, ISA, FlatBuffers alignment, sanitizers when MOE_SANITIZE
#   moe_flags_nosan     the same without sanitizers (for the allocation-counting test,
#                       which replaces malloc and cannot coexist with ASan's)

set(MOE_COMMON_DEFINITIONS MOE_VERSION="${PROJECT_VERSION}")  # FLATBUFFERS_MAX_ALIGNMENT: schema/CMakeLists.txt
set(MOE_WARNINGS -Wall -Wextra)
if(MOE_WERROR)
  list(APPEND MOE_WARNINGS -Werror)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 reports false -Wmaybe-uninitialized inside AVX-512 intrinsics headers.
    list(APPEND MOE_WARNINGS -Wno-error=maybe-uninitialized)
  endif()
endif()
separate_arguments(MOE_ARCH_LIST UNIX_COMMAND "${MOE_ARCH_FLAGS}")

add_library(moe_flags_nosan INTERFACE)
target_compile_options(moe_flags_nosan INTERFACE ${MOE_WARNINGS} ${MOE_ARCH_LIST})
target_link_options(moe_flags_nosan INTERFACE ${MOE_ARCH_LIST})  # bare metal: selects the hard-float multilib
target_compile_definitions(moe_flags_nosan INTERFACE ${MOE_COMMON_DEFINITIONS})

add_library(moe_flags INTERFACE)
target_link_libraries(moe_flags INTERFACE moe_flags_nosan)
if(MOE_SANITIZE)
  set(MOE_SANITIZER_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_compile_options(moe_flags INTERFACE ${MOE_SANITIZER_FLAGS})
  target_link_options(moe_flags INTERFACE ${MOE_SANITIZER_FLAGS})
endif()
