# kill -9 tests: the real binary, a durable storage, publisher confirms (Kafka: acks=all),
# random kills; 20 rounds per backend (tests/crash/crash_test.py).
foreach(backend queue log kafka)
  add_test(NAME crash.${backend}
           COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/crash_test.py ${backend}
                   ${WARREN_BIN} ${WARREN_PLUGIN_DIR} 20)
  set_tests_properties(crash.${backend} PROPERTIES TIMEOUT 600 LABELS "crash")
endforeach()
