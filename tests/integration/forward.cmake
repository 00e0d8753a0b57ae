# Kafka into exchanges (forward_to) against the warren binary: confluent-kafka produces keyed
# records to a topic that forwards to an exchange, pika consumes the bound queue with manual
# acks, also across a SIGTERM in the middle of a backlog (forward_test.py; one ctest per
# test function, each against its own broker). Included from tests/CMakeLists.txt, which
# sets WARREN_BIN, WARREN_PLUGIN_DIR and WARREN_PYTHON.

set(script ${CMAKE_CURRENT_LIST_DIR}/forward_test.py)
# The test names come from the script's own `def test_*` lines; editing it re-runs configure.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${script})
file(STRINGS ${script} defs REGEX "^def test_[a-z0-9_]+\\(")
foreach(def ${defs})
  string(REGEX REPLACE "^def (test_[a-z0-9_]+)\\(.*" "\\1" name "${def}")
  add_test(NAME forward.${name}
           COMMAND ${WARREN_PYTHON} ${script} ${WARREN_BIN} ${WARREN_PLUGIN_DIR} ${name})
  # The script's own watchdog fails a stuck test after 120 s.
  set_tests_properties(forward.${name} PROPERTIES TIMEOUT 200 LABELS "integration;kafka")
endforeach()
