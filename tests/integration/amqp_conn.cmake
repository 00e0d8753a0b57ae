# The AMQP 0-9-1 transport's connection layer against raw sockets and pika.
add_test(NAME amqp_conn
         COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/integration/amqp_conn_test.py
                 ${WARREN_BIN} ${WARREN_PLUGIN_DIR})
set_tests_properties(amqp_conn PROPERTIES TIMEOUT 180)
