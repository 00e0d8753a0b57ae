# The AMQP 0-9-1 transport driven by real clients against the warren binary: pika (one ctest
# per test function, each against its own broker) and the amqp-tools command-line clients.
# Included from tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR, WARREN_PYTHON.

# A passing test takes seconds; the script's own watchdog fails a stuck one after 45 s.
warren_python_tests(amqp_pika ${CMAKE_CURRENT_LIST_DIR}/amqp_pika_test.py 120
                    "integration;amqp" ${WARREN_BIN} ${WARREN_PLUGIN_DIR})

add_test(NAME amqp_tools
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/amqp_tools_test.sh ${WARREN_BIN} ${WARREN_PLUGIN_DIR}
                 ${WARREN_PYTHON})
set_tests_properties(amqp_tools PROPERTIES TIMEOUT 180 LABELS "integration;amqp")
