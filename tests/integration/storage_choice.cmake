# Which storage AMQP-declared queues get (defaults, per-vhost and per-queue overrides).
add_test(NAME storage_choice
         COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/storage_choice_test.py ${WARREN_BIN}
                 ${WARREN_PLUGIN_DIR})
set_tests_properties(storage_choice PROPERTIES TIMEOUT 180 LABELS "integration;storage")
