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

set(script ${CMAKE_CURRENT_LIST_DIR}/bridge_test.py)
# The test names come from the script's own `def test_*` lines; editing it re-runs configure.
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${script})
file(STRINGS ${script} defs REGEX "^def test_[a-z0-9_]+\\(")
foreach(def ${defs})
  string(REGEX REPLACE "^def (test_[a-z0-9_]+)\\(.*" "\\1" name "${def}")
  add_test(NAME bridge.${name}
           COMMAND ${WARREN_PYTHON} ${script} ${WARREN_BIN} ${WARREN_PLUGIN_DIR}
                   ${PROJECT_SOURCE_DIR} $<TARGET_FILE:amqp_offset_consumer> ${name})
  # The script's own watchdog fails a stuck test after 120 s.
  set_tests_properties(bridge.${name} PROPERTIES TIMEOUT 200 LABELS "integration;kafka;amqp")
endforeach()
