# The engine as a library others build against, checked as an outside project would:
# `cmake --install` this build into a fresh prefix, configure and build examples/embed
# against that prefix alone (find_package(moe_edge CONFIG)), and run it on the Mixtral
# fixture converted by this build's moe_convert: its greedy continuation of every
# reference prompt must be transformers' (reference.json).
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK=... -DMOE_CONVERT=... -DGENERATOR=... -DCXX=... -P install_and_embed.cmake
function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK}/prefix)
foreach(installed include/moe-edge/moe/engine.hpp include/moe-edge/platform/mapped_file.hpp lib/libmoe_platform.a
                  lib/cmake/moe_edge/moe_edgeConfig.cmake)
  if(NOT EXISTS ${WORK}/prefix/${installed})
    message(FATAL_ERROR "cmake --install did not install ${installed}")
  endif()
endforeach()
run("configuring examples/embed against the installed tree"
    ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/embed -B ${WORK}/build -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${WORK}/prefix -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
run("building examples/embed" ${CMAKE_COMMAND} --build ${WORK}/build)

set(fixture ${SOURCE_DIR}/tests/fixtures/mixtral-tiny-a)
run("moe_convert" ${MOE_CONVERT} ${fixture} -o ${WORK}/model.moe --experts fp32 --attention fp32 --embeddings fp32 -q)
file(READ ${fixture}/reference.json reference)
string(JSON cases LENGTH "${reference}" cases)
math(EXPR last "${cases} - 1")
foreach(c RANGE ${last})
  foreach(field input_ids greedy_continuation)
    string(JSON n LENGTH "${reference}" cases ${c} ${field})
    math(EXPR n_last "${n} - 1")
    set(${field} "")
    foreach(i RANGE ${n_last})
      string(JSON id GET "${reference}" cases ${c} ${field} ${i})
      list(APPEND ${field} ${id})
    endforeach()
  endforeach()
  list(LENGTH greedy_continuation n_new)
  run("embed" ${WORK}/build/embed ${WORK}/model.moe ${input_ids} -n ${n_new})
  string(REPLACE ";" " " want "${greedy_continuation}")
  string(STRIP "${run_output}" got)
  if(NOT got STREQUAL want)
    message(FATAL_ERROR "case ${c}: embed generated '${got}', transformers '${want}'")
  endif()
  message(STATUS "case ${c}: ${got}")
endforeach()
