# The AMQP 0-9-1 transport driven by real clients against the warren binary: pika (one ctest
# per test function, each against its own broker) and the amqp-tools command-line clients.
# Included from tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR, WARREN_PYTHON.

set(AMQP_PIKA_TEST ${CMAKE_CURRENT_LIST_DIR}/amqp_pika_test.py)
# The test names come from the script's own `def test_*` lines; editing it re-runs configure.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${AMQP_PIKA_TEST})
file(STRINGS ${AMQP_PIKA_TEST} amqp_pika_defs REGEX "^def test_[a-z0-9_]+\\(")
foreach(def ${amqp_pika_defs})
  string(REGEX REPLACE "^def (test_[a-z0-9_]+)\\(.*" "\\1" name "${def}")
  add_test(NAME amqp_pika.${name}
           COMMAND ${WARREN_PYTHON} ${AMQP_PIKA_TEST} ${WARREN_BIN} ${WARREN_PLUGIN_DIR} ${name})
  # A passing test takes seconds; the script's own watchdog fails a stuck one after 45 s.
  set_tests_properties(amqp_pika.${name} PROPERTIES TIMEOUT 120 LABELS "integration;amqp")
endforeach()

add_test(NAME amqp_tools
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/amqp_tools_test.sh ${WARREN_BIN} ${WARREN_PLUGIN_DIR}
                 ${WARREN_PYTHON})
set_tests_properties(amqp_tools PROPERTIES TIMEOUT 180 LABELS "integration;amqp")
