// errno names both ways. The expected pairs come from <cerrno>'s macros, not from the
// table under test.
#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>
#include <utility>

#include "transient/errors/classify.hpp"

namespace {

#define TRANSIENT_ERRNO(name) \
  std::pair<std::string_view, int> { #name, name }
// Every errno <errno.h> defines on Linux (x86-64 glibc), aliases included.
const std::pair<std::string_view, int> system_errnos[] = {
    TRANSIENT_ERRNO(EPERM),           TRANSIENT_ERRNO(ENOENT),       TRANSIENT_ERRNO(ESRCH),
    TRANSIENT_ERRNO(EINTR),           TRANSIENT_ERRNO(EIO),          TRANSIENT_ERRNO(ENXIO),
    TRANSIENT_ERRNO(E2BIG),           TRANSIENT_ERRNO(ENOEXEC),      TRANSIENT_ERRNO(EBADF),
    TRANSIENT_ERRNO(ECHILD),          TRANSIENT_ERRNO(EAGAIN),       TRANSIENT_ERRNO(ENOMEM),
    TRANSIENT_ERRNO(EACCES),          TRANSIENT_ERRNO(EFAULT),       TRANSIENT_ERRNO(ENOTBLK),
    TRANSIENT_ERRNO(EBUSY),           TRANSIENT_ERRNO(EEXIST),       TRANSIENT_ERRNO(EXDEV),
    TRANSIENT_ERRNO(ENODEV),          TRANSIENT_ERRNO(ENOTDIR),      TRANSIENT_ERRNO(EISDIR),
    TRANSIENT_ERRNO(EINVAL),          TRANSIENT_ERRNO(ENFILE),       TRANSIENT_ERRNO(EMFILE),
    TRANSIENT_ERRNO(ENOTTY),          TRANSIENT_ERRNO(ETXTBSY),      TRANSIENT_ERRNO(EFBIG),
    TRANSIENT_ERRNO(ENOSPC),          TRANSIENT_ERRNO(ESPIPE),       TRANSIENT_ERRNO(EROFS),
    TRANSIENT_ERRNO(EMLINK),          TRANSIENT_ERRNO(EPIPE),        TRANSIENT_ERRNO(EDOM),
    TRANSIENT_ERRNO(ERANGE),          TRANSIENT_ERRNO(EDEADLK),      TRANSIENT_ERRNO(ENAMETOOLONG),
    TRANSIENT_ERRNO(ENOLCK),          TRANSIENT_ERRNO(ENOSYS),       TRANSIENT_ERRNO(ENOTEMPTY),
    TRANSIENT_ERRNO(ELOOP),           TRANSIENT_ERRNO(EWOULDBLOCK),  TRANSIENT_ERRNO(ENOMSG),
    TRANSIENT_ERRNO(EIDRM),           TRANSIENT_ERRNO(ECHRNG),       TRANSIENT_ERRNO(EL2NSYNC),
    TRANSIENT_ERRNO(EL3HLT),          TRANSIENT_ERRNO(EL3RST),       TRANSIENT_ERRNO(ELNRNG),
    TRANSIENT_ERRNO(EUNATCH),         TRANSIENT_ERRNO(ENOCSI),       TRANSIENT_ERRNO(EL2HLT),
    TRANSIENT_ERRNO(EBADE),           TRANSIENT_ERRNO(EBADR),        TRANSIENT_ERRNO(EXFULL),
    TRANSIENT_ERRNO(ENOANO),          TRANSIENT_ERRNO(EBADRQC),      TRANSIENT_ERRNO(EBADSLT),
    TRANSIENT_ERRNO(EDEADLOCK),       TRANSIENT_ERRNO(EBFONT),       TRANSIENT_ERRNO(ENOSTR),
    TRANSIENT_ERRNO(ENODATA),         TRANSIENT_ERRNO(ETIME),        TRANSIENT_ERRNO(ENOSR),
    TRANSIENT_ERRNO(ENONET),          TRANSIENT_ERRNO(ENOPKG),       TRANSIENT_ERRNO(EREMOTE),
    TRANSIENT_ERRNO(ENOLINK),         TRANSIENT_ERRNO(EADV),         TRANSIENT_ERRNO(ESRMNT),
    TRANSIENT_ERRNO(ECOMM),           TRANSIENT_ERRNO(EPROTO),       TRANSIENT_ERRNO(EMULTIHOP),
    TRANSIENT_ERRNO(EDOTDOT),         TRANSIENT_ERRNO(EBADMSG),      TRANSIENT_ERRNO(EOVERFLOW),
    TRANSIENT_ERRNO(ENOTUNIQ),        TRANSIENT_ERRNO(EBADFD),       TRANSIENT_ERRNO(EREMCHG),
    TRANSIENT_ERRNO(ELIBACC),         TRANSIENT_ERRNO(ELIBBAD),      TRANSIENT_ERRNO(ELIBSCN),
    TRANSIENT_ERRNO(ELIBMAX),         TRANSIENT_ERRNO(ELIBEXEC),     TRANSIENT_ERRNO(EILSEQ),
    TRANSIENT_ERRNO(ERESTART),        TRANSIENT_ERRNO(ESTRPIPE),     TRANSIENT_ERRNO(EUSERS),
    TRANSIENT_ERRNO(ENOTSOCK),        TRANSIENT_ERRNO(EDESTADDRREQ), TRANSIENT_ERRNO(EMSGSIZE),
    TRANSIENT_ERRNO(EPROTOTYPE),      TRANSIENT_ERRNO(ENOPROTOOPT),  TRANSIENT_ERRNO(EPROTONOSUPPORT),
    TRANSIENT_ERRNO(ESOCKTNOSUPPORT), TRANSIENT_ERRNO(EOPNOTSUPP),   TRANSIENT_ERRNO(ENOTSUP),
    TRANSIENT_ERRNO(EPFNOSUPPORT),    TRANSIENT_ERRNO(EAFNOSUPPORT), TRANSIENT_ERRNO(EADDRINUSE),
    TRANSIENT_ERRNO(EADDRNOTAVAIL),   TRANSIENT_ERRNO(ENETDOWN),     TRANSIENT_ERRNO(ENETUNREACH),
    TRANSIENT_ERRNO(ENETRESET),       TRANSIENT_ERRNO(ECONNABORTED), TRANSIENT_ERRNO(ECONNRESET),
    TRANSIENT_ERRNO(ENOBUFS),         TRANSIENT_ERRNO(EISCONN),      TRANSIENT_ERRNO(ENOTCONN),
    TRANSIENT_ERRNO(ESHUTDOWN),       TRANSIENT_ERRNO(ETOOMANYREFS), TRANSIENT_ERRNO(ETIMEDOUT),
    TRANSIENT_ERRNO(ECONNREFUSED),    TRANSIENT_ERRNO(EHOSTDOWN),    TRANSIENT_ERRNO(EHOSTUNREACH),
    TRANSIENT_ERRNO(EALREADY),        TRANSIENT_ERRNO(EINPROGRESS),  TRANSIENT_ERRNO(ESTALE),
    TRANSIENT_ERRNO(EUCLEAN),         TRANSIENT_ERRNO(ENOTNAM),      TRANSIENT_ERRNO(ENAVAIL),
    TRANSIENT_ERRNO(EISNAM),          TRANSIENT_ERRNO(EREMOTEIO),    TRANSIENT_ERRNO(EDQUOT),
    TRANSIENT_ERRNO(ENOMEDIUM),       TRANSIENT_ERRNO(EMEDIUMTYPE),  TRANSIENT_ERRNO(ECANCELED),
    TRANSIENT_ERRNO(ENOKEY),          TRANSIENT_ERRNO(EKEYEXPIRED),  TRANSIENT_ERRNO(EKEYREVOKED),
    TRANSIENT_ERRNO(EKEYREJECTED),    TRANSIENT_ERRNO(EOWNERDEAD),   TRANSIENT_ERRNO(ENOTRECOVERABLE),
    TRANSIENT_ERRNO(ERFKILL),         TRANSIENT_ERRNO(EHWPOISON),
};
#undef TRANSIENT_ERRNO

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

TEST(ErrnoName, EveryLinuxNameMapsToItsValue) {
  for (const auto& [name, value] : system_errnos) {
    EXPECT_EQ(transient::errno_value(name), value) << name;
    EXPECT_EQ(transient::errno_value(lowercase(name)), value) << name;
  }
}

TEST(ErrnoName, EveryValueHasACanonicalName) {
  std::set<int> values;
  for (const auto& [name, value] : system_errnos) {
    values.insert(value);
    const std::string_view canonical = transient::errno_name(value);
    ASSERT_FALSE(canonical.empty()) << value;
    EXPECT_EQ(transient::errno_value(canonical), value);
  }
  const auto all = transient::all_errno_values();
  EXPECT_EQ(std::set<int>(all.begin(), all.end()), values);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
}

TEST(ErrnoName, AliasesNameTheirCanonicalValue) {
  EXPECT_EQ(transient::errno_name(EWOULDBLOCK), "EAGAIN");
  EXPECT_EQ(transient::errno_name(EDEADLOCK), "EDEADLK");
  EXPECT_EQ(transient::errno_name(ENOTSUP), "EOPNOTSUPP");
  EXPECT_EQ(transient::errno_name(24), "EMFILE");
  EXPECT_EQ(transient::errno_value("EMFILE"), 24);
  EXPECT_EQ(transient::errno_value("eMfIlE"), 24);
}

TEST(ErrnoName, UnknownNamesAndValues) {
  EXPECT_EQ(transient::errno_value(""), std::nullopt);
  EXPECT_EQ(transient::errno_value("EMFILES"), std::nullopt);
  EXPECT_EQ(transient::errno_value("MFILE"), std::nullopt);
  EXPECT_EQ(transient::errno_value("24"), std::nullopt);
  EXPECT_TRUE(transient::errno_name(0).empty());
  EXPECT_TRUE(transient::errno_name(41).empty());  // a gap in Linux's numbering
  EXPECT_TRUE(transient::errno_name(-1).empty());
  EXPECT_TRUE(transient::errno_name(134).empty());
}

}  // namespace
