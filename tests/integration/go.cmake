# Go clients against the warren binary, built with Debian's amqp091-go in GOPATH mode:
# go_examples runs the examples/go service (producer with confirms, consumer with graceful
# SIGTERM); amqp_go runs the feature test program in amqp_go/. Without go or amqp091-go each
# prints "SKIPPED: ..." and exits 77.
add_test(NAME go_examples
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/go_examples_test.sh ${PROJECT_SOURCE_DIR}
                 ${WARREN_BIN} ${WARREN_PLUGIN_DIR} ${WARREN_PYTHON})
add_test(NAME amqp_go
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/amqp_go/run.sh ${PROJECT_SOURCE_DIR}
                 ${WARREN_BIN} ${WARREN_PLUGIN_DIR} ${WARREN_PYTHON})
set_tests_properties(go_examples amqp_go PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77
                     LABELS "integration;amqp;go")
