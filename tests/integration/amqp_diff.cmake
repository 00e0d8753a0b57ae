# The AMQP 0-9-1 differential test: every scenario in amqp_diff/ runs against a private
# RabbitMQ (Debian's rabbitmq-server) and against warren, and the normalized transcripts must
# match. Without rabbitmq-server it prints "SKIPPED: ..." and exits 77. RabbitMQ takes a core
# or more while it runs, so the test runs alone.
add_test(NAME amqp_diff
         COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/amqp_diff/run.py
                 --warren ${WARREN_BIN} --plugin-dir ${WARREN_PLUGIN_DIR})
set_tests_properties(amqp_diff PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 RUN_SERIAL TRUE
                     LABELS "integration;amqp;rabbitmq")
