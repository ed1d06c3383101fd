// `shmlimit exporter --listen HOST:PORT /NAME...`: the metrics of several
// segments over HTTP for Prometheus (doc/cli.md, doc/monitoring.md).
//
// One thread, one connection at a time (a scrape is a few milliseconds:
// every segment is opened read-only, read and closed again, so a segment
// created, removed or re-created between scrapes is seen as it is now).
// Boost.Beast parses the request with small limits; a client that sends
// nothing, or stops reading, is dropped after kIoTimeoutSeconds. Every response
// closes its connection.
#include <fmt/format.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "cli.hpp"
#include "format.hpp"
#include "inspect.hpp"

namespace cli {

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

constexpr int kIoTimeoutSeconds = 10;
constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

/// "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:0".
tcp::endpoint parse_listen(const std::string& text) {
  const auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument,
                 "--listen \"" + tools::escape_bytes(text) + "\": " + why +
                     " (expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464)");
  };
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) throw bad("no HOST:PORT");
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  const std::optional<std::uint64_t> port = parse_whole(text.substr(colon + 1));
  if (!port || *port > 65535) throw bad("the port must be a whole number from 0 to 65535");
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec) throw bad("\"" + tools::escape_bytes(host) + "\" is not an IPv4 or IPv6 address");
  return {address, static_cast<unsigned short>(*port)};
}

std::string index_page() {
  return "<html><head><title>shmlimit exporter</title></head><body>"
         "<h1>shmlimit exporter</h1><p><a href=\"/metrics\">/metrics</a></p></body></html>\n";
}

/// One connection: one request, one response, closed. Reads and writes
/// are asynchronous only to have a deadline (beast::tcp_stream's timer):
/// `io` runs until this connection's one operation is done.
void serve(asio::io_context& io, tcp::socket socket, const ExporterArgs& a) {
  boost::beast::tcp_stream stream(std::move(socket));
  boost::system::error_code ec;
  const auto run_one = [&] {
    io.restart();
    io.run();
  };
  boost::beast::flat_buffer buffer(16 * 1024);
  http::request_parser<http::empty_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(0);
  stream.expires_after(std::chrono::seconds(kIoTimeoutSeconds));
  http::async_read(stream, buffer, parser,
                   [&](boost::system::error_code e, std::size_t) { ec = e; });
  run_one();
  const auto send = [&](auto& message) {
    stream.expires_after(std::chrono::seconds(kIoTimeoutSeconds));
    http::async_write(stream, message, [&](boost::system::error_code e, std::size_t) { ec = e; });
    run_one();
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  };
  http::response<http::string_body> res;
  res.version(11);
  res.keep_alive(false);
  res.set(http::field::server, "shmlimit-exporter/" SHMLIMIT_VERSION);
  if (ec) {
    // The client went away, or sent nothing before the deadline: no answer.
    if (ec == http::error::end_of_stream || ec == boost::asio::error::eof ||
        ec == boost::beast::error::timeout) {
      return;
    }
    res.result(http::status::bad_request);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = "bad request: " + ec.message() + "\n";
  } else {
    const auto& req = parser.get();
    const std::string_view target(req.target().data(), req.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
    if (!get) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "only GET and HEAD\n";
    } else if (path == "/metrics") {
      std::vector<tools::SegmentMetrics> segments;
      for (const std::string& name : a.names)
        segments.push_back(tools::read_segment_metrics(name, g_allow_other_users));
      res.result(http::status::ok);
      res.set(http::field::content_type, kContentType);
      res.body() = tools::render_metrics(segments);
    } else if (path == "/") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/html; charset=utf-8");
      res.body() = index_page();
    } else {
      res.result(http::status::not_found);
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      res.body() = "not found: the metrics are at /metrics\n";
    }
    res.prepare_payload();
    if (req.method() == http::verb::head) {
      http::response<http::empty_body> head{res.result(), res.version()};
      for (const auto& f : res) head.set(f.name_string(), f.value());
      head.keep_alive(false);
      send(head);
      return;
    }
  }
  res.prepare_payload();
  send(res);
}

}  // namespace

int run_exporter(const ExporterArgs& a) {
  require_segment_names(a.names);
  const tcp::endpoint want = parse_listen(a.listen);
  // A client that closes early must not kill the exporter.
  std::signal(SIGPIPE, SIG_IGN);
  asio::io_context io;
  tcp::acceptor acceptor(io);
  boost::system::error_code ec;
  acceptor.open(want.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(want, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("cannot listen on {}: {}", a.listen, ec.message()));
  }
  const tcp::endpoint bound = acceptor.local_endpoint();
  const std::string host = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                   : bound.address().to_string();
  tools::write_stdout(
      fmt::format("shmlimit exporter: serving {} segment{} on http://{}:{}/metrics\n",
                  a.names.size(), a.names.size() == 1 ? "" : "s", host, bound.port()));
  std::fflush(stdout);
  for (std::uint64_t n = 0; a.max_scrapes == 0 || n < a.max_scrapes; ++n) {
    tcp::socket socket(io);
    acceptor.accept(socket, ec);
    if (ec) continue;  // e.g. the client went away before accept
    try {
      serve(io, std::move(socket), a);
    } catch (const std::exception& e) {
      fail_line(std::string("exporter: ") + e.what());
    }
  }
  return kExitOk;
}

}  // namespace cli
