# CPack: one Debian package per component, so a worker host installs the
# worker without the gateway's libmicrohttpd or Python, and a producer's
# build machine installs libttclient-dev alone:
#
#   ttfleet-broker   ttbroker, its unit, user, /etc/ttfleet/ttbroker.env, man page
#   ttfleet-worker   ttworker, its unit, /etc/ttfleet/ttworker.env, man page
#   ttfleet-gw       ttgw, its unit, user, /etc/ttfleet/{ttgw.env,tokens}, man page
#   ttfleet-cli      ttctl, ttcheck, man page
#   libttclient0     the shared C client library (shlibs, ldconfig trigger)
#   libttclient-dev  its headers, link, archive and pkg-config file
#   python3-ttfleet  the Python client
#
# `cpack -G DEB` in the build directory (after building) writes them;
# packaging.deb checks them with lintian and installs them into a clean root.
set(CPACK_GENERATOR DEB)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL broker worker gw cli lib dev python)
set(CPACK_PACKAGE_NAME ttfleet)
set(CPACK_PACKAGE_VENDOR "ttfleet")
set(TT_MAINTAINER "ttfleet maintainers <maintainers@users.noreply.github.com>")
set(CPACK_PACKAGE_CONTACT "${TT_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "test-environment fleet")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/ttfleet/ttfleet")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(tt_version "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")

set(tt_pkg_broker ttfleet-broker)
set(tt_pkg_worker ttfleet-worker)
set(tt_pkg_gw ttfleet-gw)
set(tt_pkg_cli ttfleet-cli)
set(tt_pkg_lib libttclient0)
set(tt_pkg_dev libttclient-dev)
set(tt_pkg_python python3-ttfleet)

set(tt_summary_broker "ttfleet broker: env placement, leases and allocations over 7/MDP")
set(tt_summary_worker "ttfleet worker: runs one host's VMs (QEMU, process namespaces)")
set(tt_summary_gw "ttfleet HTTP gateway: REST API, web dashboard, Prometheus metrics")
set(tt_summary_cli "ttfleet command-line client (ttctl) and invariant checker (ttcheck)")
set(tt_summary_lib "ttfleet C client library")
set(tt_summary_dev "ttfleet C client library: development files")
set(tt_summary_python "ttfleet Python client")
set(tt_long " ttfleet runs temporary test environments (named groups of VMs with a\n lease) on a pool of hosts: producers ask a broker over ZeroMQ, per-host\n workers run the VMs.")

set(CPACK_DEBIAN_LIB_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
set(CPACK_DEBIAN_CLI_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PYTHON_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PYTHON_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_CLI_PACKAGE_DEPENDS "python3")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libttclient0 (= ${tt_version}), libczmq-dev, libzmq3-dev, libprotobuf-c-dev")
set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "python3, python3-zmq, python3-protobuf")
set(CPACK_DEBIAN_WORKER_PACKAGE_RECOMMENDS "qemu-system-x86, qemu-utils, nftables, genisoimage")
set(CPACK_DEBIAN_CLI_PACKAGE_SUGGESTS "ttfleet-broker")

string(TIMESTAMP tt_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(tt_debdir ${PROJECT_BINARY_DIR}/packaging/deb)
find_program(GZIP gzip REQUIRED)
foreach(comp broker worker gw cli lib dev python)
  string(TOUPPER ${comp} COMP)
  set(PACKAGE ${tt_pkg_${comp}})
  set(CPACK_DEBIAN_${COMP}_PACKAGE_NAME ${PACKAGE})
  set(CPACK_DEBIAN_${COMP}_DESCRIPTION "${tt_summary_${comp}}\n${tt_long}")
  set(CPACK_COMPONENT_${COMP}_DESCRIPTION "${tt_summary_${comp}}\n${tt_long}")
  # /usr/share/doc/PACKAGE: copyright and a Debian changelog
  set(VERSION ${tt_version})
  set(MAINTAINER "${TT_MAINTAINER}")
  set(DATE "${tt_date}")
  configure_file(${PROJECT_SOURCE_DIR}/packaging/deb/changelog.in
                 ${tt_debdir}/${PACKAGE}/changelog.Debian @ONLY)
  execute_process(COMMAND ${GZIP} -9nf ${tt_debdir}/${PACKAGE}/changelog.Debian)
  install(FILES ${PROJECT_SOURCE_DIR}/packaging/deb/copyright
                ${tt_debdir}/${PACKAGE}/changelog.Debian.gz
          DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${PACKAGE} COMPONENT ${comp})
endforeach()

# The daemons: maintainer scripts (user, daemon-reload, restart on upgrade,
# stop on remove) and their conffiles.
set(tt_conffiles_broker "/etc/ttfleet/ttbroker.env")
set(tt_conffiles_worker "/etc/ttfleet/ttworker.env")
set(tt_conffiles_gw "/etc/ttfleet/ttgw.env\n/etc/ttfleet/tokens")
set(tt_sysusers_broker /usr/lib/sysusers.d/ttbroker.conf)
set(tt_sysusers_worker "")
set(tt_sysusers_gw /usr/lib/sysusers.d/ttgw.conf)
foreach(comp broker worker gw)
  string(TOUPPER ${comp} COMP)
  set(PACKAGE ${tt_pkg_${comp}})
  set(UNIT tt${comp}.service)
  set(SYSUSERS "${tt_sysusers_${comp}}")
  set(dir ${tt_debdir}/${PACKAGE})
  foreach(script postinst prerm postrm)
    configure_file(${PROJECT_SOURCE_DIR}/packaging/deb/${script}.in ${dir}/${script} @ONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                                    GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  file(WRITE ${dir}/conffiles "${tt_conffiles_${comp}}\n")
  set(CPACK_DEBIAN_${COMP}_PACKAGE_CONTROL_EXTRA
      ${dir}/postinst ${dir}/prerm ${dir}/postrm ${dir}/conffiles)
endforeach()
set(CPACK_DEBIAN_LIB_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/packaging/deb/triggers)
include(CPack)
