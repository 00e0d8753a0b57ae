# One broker, both semantics (issue 7): AMQP publishers into logs read by Kafka consumers,
# Kafka producers into exchanges drained by AMQP consumers (forward_to), logs read over AMQP
# from an offset, replay by a rewound consumer group, and the three example configs
# (examples/kafka-like.yaml, rabbit-like.yaml, hybrid.yaml), with pika, confluent-kafka, kcat,
# amqp-tools, amqp091-go and amqp_offset_consumer (rabbitmq-c) against the warren binary
# (bridge_test.py; one ctest per test function, each against its own broker). Included from
# tests/CMakeLists.txt, which sets WARREN_BIN, WARREN_PLUGIN_DIR and WARREN_PYTHON.

# basic.consume with x-stream-offset, which amqp-tools' amqp-consume cannot send.
pkg_check_modules(RABBITMQ_C IMPORTED_TARGET librabbitmq)
if(NOT RABBITMQ_C_FOUND)
  message(STATUS "librabbitmq not found (apt-get install librabbitmq-dev): bridge tests skipped")
  return()
endif()
add_executable(amqp_offset_consumer ${CMAKE_CURRENT_LIST_DIR}/amqp_offset_consumer.c)
target_link_libraries(amqp_offset_consumer PRIVATE PkgConfig::RABBITMQ_C)

# The script's own watchdog fails a stuck test after 120 s.
warren_python_tests(bridge ${CMAKE_CURRENT_LIST_DIR}/bridge_test.py 200 "integration;kafka;amqp"
                    ${WARREN_BIN} ${WARREN_PLUGIN_DIR} ${PROJECT_SOURCE_DIR}
                    $<TARGET_FILE:amqp_offset_consumer>)
