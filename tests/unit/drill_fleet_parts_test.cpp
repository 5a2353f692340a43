// The fleet scenario's parts that need no HAProxy (tools/drill/drill_fleet_parts.cpp): its
// configurations' placeholders filled (the shipped files among them), and HAProxy's `show stat`
// read, on a capture of HAProxy 2.6's own answer and on hand-made ones.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

#include "../../tools/drill/drill_fleet.hpp"

namespace {

using transient::tool::fill_placeholders;
using transient::tool::haproxy_server_stat;
using transient::tool::parse_show_stat;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The ports the drill fills in (drill_fleet.cpp's fleet_config).
const std::map<std::string, std::string> fleet_ports{
    {"FRONT_PORT", "8000"},     {"A_PORT", "8001"},         {"A_METRICS_PORT", "9001"}, {"A_AGENT_PORT", "7001"},
    {"B_PORT", "8002"},         {"B_METRICS_PORT", "9002"}, {"B_AGENT_PORT", "7002"},   {"C_PORT", "8003"},
    {"C_METRICS_PORT", "9003"}, {"C_AGENT_PORT", "7003"}};

TEST(DrillFleetParts, PlaceholdersAreFilledAndAMissingOneIsRefused) {
  EXPECT_EQ(fill_placeholders("bind 127.0.0.1:@FRONT_PORT@\nserver a 127.0.0.1:@A_PORT@ port @A_METRICS_PORT@\n",
                              fleet_ports),
            "bind 127.0.0.1:8000\nserver a 127.0.0.1:8001 port 9001\n");
  EXPECT_EQ(fill_placeholders("no placeholder", {}), "no placeholder");
  EXPECT_EQ(fill_placeholders("@A_PORT@@B_PORT@", fleet_ports), "80018002");
  try {
    (void)fill_placeholders("server d 127.0.0.1:@D_PORT@", fleet_ports);
    ADD_FAILURE() << "an unfilled placeholder must not reach HAProxy";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("@D_PORT@"), std::string::npos) << e.what();
  }
}

// Each shipped configuration is filled completely by the drill's names: no at sign is left,
// and every instance's port is in it.
TEST(DrillFleetParts, TheShippedConfigurationsFillCompletely) {
  for (const char* name : {"haproxy.cfg.in", "haproxy-httpchk.cfg.in", "haproxy-tcp.cfg.in"}) {
    const std::string text = read_file(std::string(TRANSIENT_SOURCE_DIR) + "/examples/fleet/" + name);
    ASSERT_FALSE(text.empty()) << name;
    const std::string filled = fill_placeholders(text, fleet_ports);
    EXPECT_EQ(filled.find('@'), std::string::npos) << name;
    for (const char* port : {"127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"}) {
      EXPECT_NE(filled.find(port), std::string::npos) << name << " " << port;
    }
  }
}

// HAProxy 2.6's answer to `show stat` for a backend of three servers: a and b (weight 0)
// refusing their checks, c disabled (MAINT), and the backend's own line.
constexpr std::string_view captured =
    R"csv(# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
fleet,a,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,100,1,0,1,1,3,3,,1,2,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:1,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,100,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
fleet,b,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,0,1,0,1,1,3,3,,1,2,2,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:2,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,0,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
fleet,c,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,100,1,0,0,0,3,3,,1,2,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:3,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,0,100,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
fleet,BACKEND,0,0,0,0,1,0,0,0,0,0,,0,0,0,0,DOWN,0,0,0,,1,3,3,,1,2,0,,0,,1,0,,0,,,,0,0,0,0,0,0,,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,0,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,

)csv";

TEST(DrillFleetParts, ShowStatOfHAProxyTwoSixIsReadByItsHeader) {
  const auto servers = parse_show_stat(captured);
  ASSERT_EQ(servers.size(), 3U) << "the BACKEND line is not a server";
  EXPECT_EQ(servers[0].proxy, "fleet");
  EXPECT_EQ(servers[0].server, "a");
  EXPECT_EQ(servers[0].status, "DOWN");
  EXPECT_EQ(servers[0].weight, 100);
  EXPECT_EQ(servers[0].check, "L4CON");
  EXPECT_EQ(servers[1].server, "b");
  EXPECT_EQ(servers[1].weight, 0);
  EXPECT_EQ(servers[2].server, "c");
  EXPECT_EQ(servers[2].status, "MAINT");
  for (const auto& s : servers) {
    EXPECT_FALSE(s.in_rotation()) << s.server;
  }
}

// Columns are found by name, in any order; the counters are read as numbers.
TEST(DrillFleetParts, ShowStatColumnsAreFoundByName) {
  const std::string csv =
      "# stot,status,svname,weight,pxname,wretr,check_status,wredis\n"
      "1234,UP,a,100,fleet,2,L7OK,3\n"
      "17,UP 1/3,b,50,fleet,0,L7TOUT,0\n"
      "99,DRAIN,c,0,fleet,0,L7OK,1\n"
      "5000,OPEN,FRONTEND,,web,,,\n";
  const auto servers = parse_show_stat(csv);
  ASSERT_EQ(servers.size(), 3U) << "the FRONTEND line is not a server";
  EXPECT_EQ(servers[0].sessions, 1234U);
  EXPECT_EQ(servers[0].retried, 5U) << "wretr + wredis";
  EXPECT_EQ(servers[0].check, "L7OK");
  EXPECT_TRUE(servers[0].in_rotation());
  EXPECT_EQ(servers[1].status, "UP 1/3");
  EXPECT_TRUE(servers[1].in_rotation()) << "going down, still sent requests";
  EXPECT_EQ(servers[2].status, "DRAIN");
  EXPECT_FALSE(servers[2].in_rotation()) << "drained by its agent: weight 0";
}

TEST(DrillFleetParts, AnAnswerWithoutTheHeaderOrAColumnIsEmpty) {
  EXPECT_TRUE(parse_show_stat("").empty());
  EXPECT_TRUE(parse_show_stat("Unknown command\n").empty());
  EXPECT_TRUE(parse_show_stat("# pxname,svname,status,weight\nfleet,a,UP,100\n").empty()) << "no stot column";
  EXPECT_TRUE(parse_show_stat("# pxname,svname,status,weight,stot,check_status,wretr,wredis\nfleet,a\n").empty())
      << "a line shorter than its header";
}

TEST(DrillFleetParts, InRotationIsUpOrUncheckedWithAWeight) {
  const auto with = [](const char* status, long weight) {
    haproxy_server_stat s;
    s.status = status;
    s.weight = weight;
    return s.in_rotation();
  };
  EXPECT_TRUE(with("UP", 100));
  EXPECT_TRUE(with("no check", 1));
  EXPECT_FALSE(with("UP", 0));
  EXPECT_FALSE(with("DOWN", 100));
  EXPECT_FALSE(with("DOWN 1/2", 100)) << "coming back, not yet sent requests";
  EXPECT_FALSE(with("NOLB", 100));
  EXPECT_FALSE(with("MAINT", 100));
}

}  // namespace
