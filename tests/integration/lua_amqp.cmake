# The `lua` exchange type through AMQP (issue 6): the examples/lua scripts and their config,
# script failures and dead-lettering, reload on SIGHUP and the users: lua_scripts permission,
# with pika (one ctest per test function, each against its own broker). Included from
# tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR and WARREN_PYTHON.
set(LUA_AMQP_TEST ${CMAKE_CURRENT_LIST_DIR}/lua_amqp_test.py)
# The test names come from the script's own `def test_*` lines; editing it re-runs configure.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${LUA_AMQP_TEST})
file(STRINGS ${LUA_AMQP_TEST} lua_amqp_defs REGEX "^def test_[a-z0-9_]+\\(")
foreach(def ${lua_amqp_defs})
  string(REGEX REPLACE "^def (test_[a-z0-9_]+)\\(.*" "\\1" name "${def}")
  add_test(NAME lua_amqp.${name}
           COMMAND ${WARREN_PYTHON} ${LUA_AMQP_TEST} ${WARREN_BIN} ${WARREN_PLUGIN_DIR}
                   ${PROJECT_SOURCE_DIR}/examples/lua ${name})
  # A passing test takes seconds; the script's own watchdog fails a stuck one after 45 s.
  set_tests_properties(lua_amqp.${name} PROPERTIES TIMEOUT 120 LABELS "integration;amqp;lua")
endforeach()
