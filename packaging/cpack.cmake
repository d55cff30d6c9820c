# CPack: one Debian package, ttfleet, with the daemons, ttctl, libttclient
# and its headers, the units, config files, man pages and the Python client.
# `cpack -G DEB` in the build directory (after building) writes it.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ttfleet)
set(CPACK_PACKAGE_VENDOR "ttfleet")
set(CPACK_PACKAGE_CONTACT "ttfleet maintainers <ttfleet@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "test-environment fleet: broker, worker, HTTP gateway, clients")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libczmq4, libzmq5, libprotobuf-c1, libsqlite3-0, libjansson4, libmicrohttpd12, libnftables1, libseccomp2, python3, python3-zmq, python3-protobuf")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "qemu-system-x86, qemu-utils, nftables, genisoimage")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/postinst ${PROJECT_BINARY_DIR}/packaging/conffiles)
file(WRITE ${PROJECT_BINARY_DIR}/packaging/conffiles
     "/etc/ttfleet/ttbroker.env\n/etc/ttfleet/ttworker.env\n/etc/ttfleet/ttgw.env\n/etc/ttfleet/tokens\n")
include(CPack)
