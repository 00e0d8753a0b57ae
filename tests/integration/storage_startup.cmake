# Damaged storage files stop start-up naming the file and change nothing.
add_test(NAME storage_startup
         COMMAND ${WARREN_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/storage_startup_test.py ${WARREN_BIN}
                 ${WARREN_PLUGIN_DIR})
set_tests_properties(storage_startup PROPERTIES TIMEOUT 180 LABELS "integration;storage")
