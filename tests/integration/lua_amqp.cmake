# The `lua` exchange type through AMQP (issue 6): the examples/lua scripts and their config,
# script failures and dead-lettering, reload on SIGHUP and the users: lua_scripts permission,
# with pika (one ctest per test function, each against its own broker). Included from
# tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR and WARREN_PYTHON.
# A passing test takes seconds; the script's own watchdog fails a stuck one after 45 s.
warren_python_tests(lua_amqp ${CMAKE_CURRENT_LIST_DIR}/lua_amqp_test.py 120
                    "integration;amqp;lua" ${WARREN_BIN} ${WARREN_PLUGIN_DIR}
                    ${PROJECT_SOURCE_DIR}/examples/lua)
