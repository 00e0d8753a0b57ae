# Kafka administration and producer state across restarts against the warren binary:
# CreatePartitions through confluent-kafka's AdminClient (a topic grows and keeps its
# partitions after a restart) and idempotent batches retried after a restart, sent as raw
# Produce requests (kafka_admin_test.py; one ctest per test function, each against its own
# broker). Included from tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR and
# WARREN_PYTHON.

# The script's own watchdog fails a stuck test after 120 s.
warren_python_tests(kafka_admin ${CMAKE_CURRENT_LIST_DIR}/kafka_admin_test.py 200
                    "integration;kafka" ${WARREN_BIN} ${WARREN_PLUGIN_DIR})
