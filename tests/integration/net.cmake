# Real VMs and real packets (issue 5): the qemu engine with the nft backend
# inside network namespaces the test makes, and with the user backend.
# They boot the test guest (tools/mkguest.sh) under QEMU, TCG when KVM does
# not work, so each takes about a minute. Exit 77 = skipped, only when
# impossible here (no root or no network namespaces; no QEMU installed):
# the reason is on stdout.
foreach(spec "qemu_nft:test_qemu_nft_net:300"
             "nft_isolation:test_nft_isolation:300"
             "qemu_user:test_qemu_user_net:300")
  string(REPLACE ":" ";" parts "${spec}")
  list(GET parts 0 name)
  list(GET parts 1 target)
  list(GET parts 2 timeout)
  add_test(NAME integration.net.${name}
           COMMAND ${Python3_EXECUTABLE} -m unittest -v ${target}
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(integration.net.${name} PROPERTIES
                       TIMEOUT ${timeout}
                       ENVIRONMENT "${TT_IT_ENV}"
                       SKIP_RETURN_CODE 77
                       PROCESSORS 2
                       LABELS "integration;net")
endforeach()
# The user backend binds public ports (40000..59999) on the host's loopback,
# which other tests' connections may hold as ephemeral ports: run it alone.
set_tests_properties(integration.net.qemu_user PROPERTIES RUN_SERIAL TRUE)

# A guest cannot fill the worker's disk (issue 9 item 10): console logs are
# capped and rotated, a process VM's disk is bounded at its size.
add_test(NAME integration.bounds
         COMMAND ${Python3_EXECUTABLE} -m unittest -v test_console_disk_bounds
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration.bounds PROPERTIES
                     TIMEOUT 200
                     ENVIRONMENT "${TT_IT_ENV}"
                     SKIP_RETURN_CODE 77
                     LABELS integration)

# Images across the pool (issue 12): three workers whose image caches start
# empty fetch pushed images from the broker's blob server; the test guest
# boots under QEMU on each (the user backend: public ports on loopback, so
# alone like qemu_user). Exit 77 only without QEMU.
add_test(NAME integration.image_pool
         COMMAND ${Python3_EXECUTABLE} -m unittest -v test_image_pool
         WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
set_tests_properties(integration.image_pool PROPERTIES
                     TIMEOUT 420
                     ENVIRONMENT "${TT_IT_ENV}"
                     SKIP_RETURN_CODE 77
                     PROCESSORS 2
                     RUN_SERIAL TRUE
                     LABELS "integration;net;images")
