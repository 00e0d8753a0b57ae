# Durable definitions (core/src/definitions.c) through pika against the real binary: what a
# client declares durable is there again after SIGTERM and after kill -9, with its arguments,
# bindings and persistent messages; what was deleted or not durable is not.
foreach(how sigterm kill9)
  add_test(NAME definitions.${how}
           COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/definitions_test.py ${WARREN_BIN}
                   ${WARREN_PLUGIN_DIR} ${how})
  set_tests_properties(definitions.${how} PROPERTIES TIMEOUT 180 LABELS "integration;amqp")
endforeach()
