# The AMQP channel layer (plugins/amqp091/channel.c) through pika: declare, bind, publish,
# consume, get, acks, prefetch, returns, confirms, transactions and RabbitMQ's error texts,
# against one broker that must then exit 0 on SIGTERM with state left open.
add_test(NAME amqp_channel
         COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/amqp_channel_test.py ${WARREN_BIN}
                 ${WARREN_PLUGIN_DIR})
set_tests_properties(amqp_channel PROPERTIES TIMEOUT 600 LABELS "integration;amqp")
