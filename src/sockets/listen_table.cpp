// The LISTEN sockets from sock_diag, or from /proc/net/tcp* when sock_diag is not available.
#include "sockets/listen_table.hpp"

#include "detail/proc_file.hpp"
#include "sockets/sock_diag.hpp"

namespace transient::detail {
namespace {

listen_table from_sock_diag(std::error_code& ec) {
  listen_table table;
  table.source = listen_source::sock_diag;
  const auto listeners = read_sock_diag_listeners(ec);
  if (ec) {
    return table;
  }
  table.rows.reserve(listeners.size());
  for (const auto& l : listeners) {
    table.rows.push_back(listen_row{l.local, l.uid, l.inode, l.cookie, l.queued, l.limit});
  }
  return table;
}

listen_table from_proc(std::error_code& ec) {
  listen_table table;
  table.source = listen_source::proc_net_tcp;
  const auto rows = read_kernel_tcp_rows(ec);
  if (ec) {
    return table;
  }
  for (const auto& row : rows) {
    if (row.state == tcp_state_listen) {
      table.rows.push_back(listen_row{row.local, row.uid, row.inode, 0, row.rx_queue, std::nullopt});
    }
  }
  return table;
}

}  // namespace

listen_table read_listen_table(listen_source source, std::error_code& ec) {
  ec.clear();
  switch (source) {
    case listen_source::sock_diag: return from_sock_diag(ec);
    case listen_source::proc_net_tcp: return from_proc(ec);
    case listen_source::automatic: break;
  }
  std::error_code diag_error;
  listen_table table = from_sock_diag(diag_error);
  if (!diag_error) {
    return table;
  }
  table = from_proc(ec);
  table.sock_diag_error = diag_error;
  return table;
}

listen_entry entry_of(const listen_row& row) {
  listen_entry entry;
  entry.address = row.local;
  entry.inode = row.inode;
  entry.uid = row.uid;
  entry.cookie = row.cookie;
  entry.queued = row.queued;
  entry.queue_limit = row.queue_limit;
  return entry;
}

const char* source_name(listen_source source) noexcept {
  switch (source) {
    case listen_source::sock_diag: return "sock_diag";
    case listen_source::proc_net_tcp: return "/proc/net/tcp";
    case listen_source::automatic: break;
  }
  return "sock_diag or /proc/net/tcp";
}

}  // namespace transient::detail
