# Every dependency comes from a Debian 12 package (scripts/install-deps.sh installs them).
# Host builds use their CMake packages. Cross builds cannot (with PACKAGE ONLY the host's
# packages vanish): the header-only libraries become plain INTERFACE targets (the cross
# compilers search /usr/include last, so their headers are found), GoogleTest is built
# from Debian's sources, and flatc is the host's program.

if(CMAKE_CROSSCOMPILING)
  foreach(lib xsimd flatbuffers::flatbuffers nlohmann_json::nlohmann_json CLI11::CLI11)
    string(MAKE_C_IDENTIFIER "moe_dep_${lib}" name)
    add_library(${name} INTERFACE)
    add_library(${lib} ALIAS ${name})
  endforeach()
  if(MOE_BARE_METAL)
    # arm-none-eabi does not search /usr/include: give it the FlatBuffers headers alone
    # (an -isystem of /usr/include would bring the host's libc headers).
    set(include_dir ${CMAKE_BINARY_DIR}/cross-include)
    file(MAKE_DIRECTORY ${include_dir})
    file(CREATE_LINK /usr/include/flatbuffers ${include_dir}/flatbuffers SYMBOLIC)
    target_include_directories(moe_dep_flatbuffers__flatbuffers SYSTEM INTERFACE $<BUILD_INTERFACE:${include_dir}>)
  endif()
  find_program(MOE_FLATC flatc)
  if(MOE_BUILD_TESTS)
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    set(BUILD_GMOCK OFF CACHE BOOL "" FORCE)
    add_subdirectory(/usr/src/googletest ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL)
    # googletest 1.12 defines the GTest::gtest and GTest::gtest_main aliases itself.
    include(GoogleTest)
  endif()
  return()
endif()

# libxsimd-dev 8.1: its CMake target links -lxtl; give it the xtl target it expects.
find_package(xtl CONFIG QUIET)
if(NOT TARGET xtl)
  add_library(xtl INTERFACE IMPORTED)
endif()
find_package(xsimd 8.1 CONFIG REQUIRED)

# flatbuffers-compiler + libflatbuffers-dev 2.0.8 (the generated header asserts exactly 2.0.8).
find_package(FlatBuffers 2.0.8 CONFIG REQUIRED)
find_program(MOE_FLATC flatc)

# libutf8proc-dev: the source of the Unicode tables BPE tokenizers carry
# (converter/unicode/unicode_data.inc is generated from it and checked against it), and
# the reference the NFC test compares with. Host builds only: nothing links it at run time.
find_path(MOE_UTF8PROC_INCLUDE utf8proc.h)
find_library(MOE_UTF8PROC_LIBRARY utf8proc)
if(NOT MOE_UTF8PROC_INCLUDE OR NOT MOE_UTF8PROC_LIBRARY)
  message(FATAL_ERROR "utf8proc not found: install libutf8proc-dev (scripts/install-deps.sh does)")
endif()
add_library(moe_utf8proc INTERFACE IMPORTED)
target_include_directories(moe_utf8proc INTERFACE ${MOE_UTF8PROC_INCLUDE})
target_link_libraries(moe_utf8proc INTERFACE ${MOE_UTF8PROC_LIBRARY})

if(MOE_BUILD_TOOLS OR MOE_BUILD_TESTS OR MOE_FUZZ)
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
