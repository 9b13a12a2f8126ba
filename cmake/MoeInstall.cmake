# `cmake --install BUILD --prefix P` puts the engine where other programs build against
# it: the headers under P/include/moe-edge, the libraries a program needs (moe_platform,
# and moe_converter where it was built) under P/lib, and a CMake package:
#   find_package(moe_edge CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE moe_edge::platform)   # or moe_edge::engine on bare metal
# examples/embed is such a program; tests/install_and_embed.cmake builds it against an
# installed tree. Cross builds install the same way, into a board's sysroot. The ISA
# flags the tree was configured with (MOE_ARCH_FLAGS) come with moe_edge::engine, so a
# program compiles the header-only kernels for the same instruction set.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(MOE_INSTALL_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/moe-edge)
set(MOE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/moe_edge)

install(DIRECTORY engine/moe DESTINATION ${MOE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
install(FILES schema/moe_model_generated.h schema/moe_model.fbs DESTINATION ${MOE_INSTALL_INCLUDEDIR})

set(moe_exported moe_schema moe_engine)
set_target_properties(moe_schema PROPERTIES EXPORT_NAME schema)
set_target_properties(moe_engine PROPERTIES EXPORT_NAME engine)
foreach(flag IN LISTS MOE_ARCH_LIST)
  target_compile_options(moe_engine INTERFACE "$<INSTALL_INTERFACE:${flag}>")
endforeach()
if(TARGET moe_platform)
  install(DIRECTORY engine/platform DESTINATION ${MOE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
  set_target_properties(moe_platform PROPERTIES EXPORT_NAME platform)
  list(APPEND moe_exported moe_platform)
endif()
if(TARGET moe_converter)
  install(DIRECTORY converter DESTINATION ${MOE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.hpp")
  set_target_properties(moe_converter PROPERTIES EXPORT_NAME converter)
  list(APPEND moe_exported moe_converter)
endif()
if(CMAKE_CROSSCOMPILING)  # the header-only dependencies' stand-ins (MoeDependencies.cmake)
  foreach(dep moe_dep_xsimd moe_dep_flatbuffers__flatbuffers moe_dep_nlohmann_json__nlohmann_json)
    if(TARGET ${dep})
      list(APPEND moe_exported ${dep})
    endif()
  endforeach()
endif()

install(TARGETS ${moe_exported} EXPORT moe_edgeTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${MOE_INSTALL_INCLUDEDIR})
install(EXPORT moe_edgeTargets NAMESPACE moe_edge:: DESTINATION ${MOE_INSTALL_CMAKEDIR})

set(MOE_PACKAGE_CROSS ${CMAKE_CROSSCOMPILING})
configure_package_config_file(cmake/moe_edgeConfig.cmake.in ${CMAKE_BINARY_DIR}/moe_edgeConfig.cmake
                              INSTALL_DESTINATION ${MOE_INSTALL_CMAKEDIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/moe_edgeConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/moe_edgeConfig.cmake ${CMAKE_BINARY_DIR}/moe_edgeConfigVersion.cmake
        DESTINATION ${MOE_INSTALL_CMAKEDIR})
