# Kafka into exchanges (forward_to) against the warren binary: confluent-kafka produces keyed
# records to a topic that forwards to an exchange, pika consumes the bound queue with manual
# acks, also across a SIGTERM in the middle of a backlog (forward_test.py; one ctest per
# test function, each against its own broker). Included from tests/CMakeLists.txt, which
# sets WARREN_BIN, WARREN_PLUGIN_DIR and WARREN_PYTHON.

# The script's own watchdog fails a stuck test after 120 s.
warren_python_tests(forward ${CMAKE_CURRENT_LIST_DIR}/forward_test.py 200 "integration;kafka"
                    ${WARREN_BIN} ${WARREN_PLUGIN_DIR})
