# Finds liburing (Debian: liburing-dev) and makes the imported target transient::liburing,
# which transient::uring links. Both the build (CMakeLists.txt) and the installed package
# (transientConfig.cmake) include this file, so an installed transient::uring links the liburing
# of the machine that uses it, found there, instead of a path recorded where transient was built:
# an install moved to another prefix or machine keeps working. Sets TRANSIENT_LIBURING_FOUND.
find_path(TRANSIENT_LIBURING_INCLUDE_DIR liburing.h)
find_library(TRANSIENT_LIBURING_LIBRARY uring)
if(TRANSIENT_LIBURING_INCLUDE_DIR AND TRANSIENT_LIBURING_LIBRARY)
  set(TRANSIENT_LIBURING_FOUND TRUE)
  if(NOT TARGET transient::liburing)
    add_library(transient::liburing UNKNOWN IMPORTED)
    set_target_properties(transient::liburing PROPERTIES IMPORTED_LOCATION "${TRANSIENT_LIBURING_LIBRARY}"
                                                         INTERFACE_INCLUDE_DIRECTORIES "${TRANSIENT_LIBURING_INCLUDE_DIR}")
  endif()
else()
  set(TRANSIENT_LIBURING_FOUND FALSE)
endif()
