# The Kafka transport driven by real clients against the warren binary (issue 5): kcat,
# librdkafka through python3-confluent-kafka and kafka-python (one ctest per test function,
# each against its own broker), and the Go clients and examples/go-kafka (kafka_go_test.py).
# Included from tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR, WARREN_PYTHON.

# The script's own watchdog fails a stuck test after 120 s; kcat exits 77 when missing.
foreach(suite kcat confluent python)
  warren_python_tests(kafka_${suite} ${CMAKE_CURRENT_LIST_DIR}/kafka_${suite}_test.py 200
                      "integration;kafka" ${WARREN_BIN} ${WARREN_PLUGIN_DIR})
endforeach()

# Go: the kafka_go checks per client, and the example service. Without go or the client's
# Debian package each exits 77 (skipped). Debian's segmentio/kafka-go 0.2.1 sends no
# ApiVersions, produces with Produce v2 (magic-1 message sets) and fetches with Fetch v2,
# which the transport converts (plugins/kafka/msgset.c).
foreach(what confluent segmentio examples)
  add_test(NAME kafka_go.${what}
           COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/kafka_go_test.py
                   ${PROJECT_SOURCE_DIR} ${WARREN_BIN} ${WARREN_PLUGIN_DIR} ${what})
  set_tests_properties(kafka_go.${what} PROPERTIES TIMEOUT 400 SKIP_RETURN_CODE 77
                       LABELS "integration;kafka;go")
endforeach()

# Broken requests close their own connection only; SASL PLAIN admits the config's users.
add_test(NAME kafka_wire
         COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/kafka_wire_test.py ${WARREN_BIN}
                 ${WARREN_PLUGIN_DIR})
set_tests_properties(kafka_wire PROPERTIES TIMEOUT 200 LABELS "integration;kafka")
