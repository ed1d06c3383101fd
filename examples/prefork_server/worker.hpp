// Private to shmlimit-server: the worker process's entry point
// (worker.cpp), forked by the master (server.cpp).
#pragma once

#include <sys/types.h>

#include "server_config.hpp"

namespace prefork {

// Runs in the forked child; never returns.
[[noreturn]] void worker_main(const shmlimit::server::ServerConfig& config, int listen_fd,
                              pid_t master);

}  // namespace prefork
