# Every dependency comes from a Debian 12 package (scripts/install-deps.sh installs them).

# libxsimd-dev 8.1: its CMake target links -lxtl; give it the xtl target it expects.
find_package(xtl CONFIG QUIET)
if(NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED)
endif()
find_package(xsimd 8.1 CONFIG REQUIRED)

# flatbuffers-compiler + libflatbuffers-dev 2.0.8 (the generated header asserts exactly 2.0.8).
find_package(FlatBuffers 2.0.8 CONFIG REQUIRED)
find_program(MOE_FLATC flatc)

if(MOE_BUILD_TOOLS OR MOE_BUILD_TESTS)
  find_package(nlohmann_json 3 CONFIG REQUIRED)
  find_package(CLI11 CONFIG REQUIRED)
endif()
if(MOE_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
if(MOE_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
