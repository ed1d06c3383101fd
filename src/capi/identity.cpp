// The C API's client identity: identity options, client_identity, allow/deny
// lists and throttle keys (doc/identity.md).
#include "capi_impl.hpp"

using namespace capi_detail;

extern "C" {

void shmlimit_identity_options_init(shmlimit_identity_options* options) {
  if (options == nullptr) return;
  const shmlimit::IdentityOptions d;
  std::memset(options, 0, sizeof *options);
  options->struct_size = sizeof *options;
  options->num_proxies = -1;
  options->normalize = d.normalize ? 1 : 0;
  options->trust_unix_peer = d.trust_unix_peer ? 1 : 0;
  options->use_forwarded = d.use_forwarded ? 1 : 0;
  options->ipv4_prefix = d.ipv4_prefix;
  options->ipv6_prefix = d.ipv6_prefix;
  options->max_hops = d.max_hops;
  options->max_header_bytes = d.max_header_bytes;
  options->max_key_bytes = d.max_key_bytes;
}

shmlimit_status shmlimit_identity_new(const shmlimit_identity_options* options,
                                      shmlimit_identity** out) {
  if (out == nullptr) return null_argument("shmlimit_identity_new", "out");
  *out = nullptr;
  if (options == nullptr) return null_argument("shmlimit_identity_new", "options");
  return guarded("shmlimit_identity_new", [&] {
    if (options->struct_size < sizeof(shmlimit_identity_options)) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT,
                  "shmlimit_identity_new: struct_size is too small (call "
                  "shmlimit_identity_options_init first)");
    }
    if (options->num_proxies < -1) {
      return fail(SHMLIMIT_E_INVALID_ARGUMENT, "shmlimit_identity_new: num_proxies is " +
                                                   std::to_string(options->num_proxies) +
                                                   " (expected -1 or more)");
    }
    auto id = std::make_unique<shmlimit_identity>();
    shmlimit::IdentityOptions& o = id->options;
    if (options->num_proxies >= 0) o.num_proxies = static_cast<unsigned>(options->num_proxies);
    o.normalize = options->normalize != 0;
    o.trust_unix_peer = options->trust_unix_peer != 0;
    o.use_forwarded = options->use_forwarded != 0;
    o.ipv4_prefix = options->ipv4_prefix;
    o.ipv6_prefix = options->ipv6_prefix;
    o.max_hops = options->max_hops;
    o.max_header_bytes = static_cast<std::size_t>(options->max_header_bytes);
    o.max_key_bytes = static_cast<std::size_t>(options->max_key_bytes);
    const auto list = [](const char* text, const char* what) {
      try {
        return text == nullptr ? std::vector<shmlimit::Cidr>() : shmlimit::parse_cidrs(text);
      } catch (const shmlimit::Error& e) {
        throw shmlimit::Error(e.code(),
                              std::string("shmlimit_identity_new: ") + what + ": " + e.what());
      }
    };
    o.trusted_proxies = list(options->trusted_proxies, "trusted_proxies");
    id->access = shmlimit::AccessList(list(options->allow, "allow"), list(options->deny, "deny"));
    *out = id.release();
    return SHMLIMIT_OK;
  });
}

void shmlimit_identity_free(shmlimit_identity* identity) { delete identity; }

shmlimit_status shmlimit_client_identity(const shmlimit_identity* identity,
                                         const shmlimit_request_info* request, char* key,
                                         size_t key_capacity, shmlimit_client* client) {
  if (identity == nullptr) return null_argument("shmlimit_client_identity", "identity");
  if (request == nullptr) return null_argument("shmlimit_client_identity", "request");
  if (client == nullptr) return null_argument("shmlimit_client_identity", "client");
  if (key == nullptr && key_capacity != 0) return null_argument("shmlimit_client_identity", "key");
  std::memset(client, 0, sizeof *client);
  if (!key_ok(request->remote_addr, request->remote_addr_len)) {
    return null_argument("shmlimit_client_identity", "request.remote_addr");
  }
  return guarded("shmlimit_client_identity", [&] {
    shmlimit::RequestInfo info;
    info.remote_addr = key_view(request->remote_addr, request->remote_addr_len);
    if (request->x_forwarded_for != nullptr) {
      info.x_forwarded_for =
          std::string_view(request->x_forwarded_for, request->x_forwarded_for_len);
    }
    if (request->forwarded != nullptr)
      info.forwarded = std::string_view(request->forwarded, request->forwarded_len);
    const shmlimit::Identity who = shmlimit::client_identity(info, identity->options);
    client->access = static_cast<std::uint8_t>(identity->access.classify(who.address));
    client->source = static_cast<std::uint8_t>(who.source);
    client->hashed = who.hashed ? 1 : 0;
    client->has_address = who.address.has_value() ? 1 : 0;
    std::size_t len = 0;
    const shmlimit_status st =
        copy_out("shmlimit_client_identity", who.key, key, key_capacity, &len);
    client->key_len = static_cast<std::uint32_t>(len);
    return st;
  });
}

shmlimit_status shmlimit_classify(const shmlimit_identity* identity, const char* address,
                                  size_t address_len, int* access) {
  if (identity == nullptr) return null_argument("shmlimit_classify", "identity");
  if (access == nullptr) return null_argument("shmlimit_classify", "access");
  if (!key_ok(address, address_len)) return null_argument("shmlimit_classify", "address");
  *access = static_cast<int>(identity->access.classify(
      shmlimit::IpAddress::try_parse_host(key_view(address, address_len))));
  return SHMLIMIT_OK;
}

shmlimit_status shmlimit_throttle_key(const char* scope, size_t scope_len, const char* ident,
                                      size_t ident_len, size_t max_key_bytes, char* key,
                                      size_t key_capacity, size_t* len) {
  if (len == nullptr) return null_argument("shmlimit_throttle_key", "len");
  *len = 0;
  if (!key_ok(scope, scope_len)) return null_argument("shmlimit_throttle_key", "scope");
  if (!key_ok(ident, ident_len)) return null_argument("shmlimit_throttle_key", "ident");
  if (key == nullptr && key_capacity != 0) return null_argument("shmlimit_throttle_key", "key");
  return guarded("shmlimit_throttle_key", [&] {
    const std::string k = shmlimit::throttle_key(key_view(scope, scope_len),
                                                 key_view(ident, ident_len), max_key_bytes);
    return copy_out("shmlimit_throttle_key", k, key, key_capacity, len);
  });
}

shmlimit_status shmlimit_fit_key(const char* key, size_t key_len, size_t max_key_bytes, char* out,
                                 size_t out_capacity, size_t* len) {
  if (len == nullptr) return null_argument("shmlimit_fit_key", "len");
  *len = 0;
  if (!key_ok(key, key_len)) return null_argument("shmlimit_fit_key", "key");
  if (out == nullptr && out_capacity != 0) return null_argument("shmlimit_fit_key", "out");
  if (max_key_bytes == 0) {
    return fail(SHMLIMIT_E_INVALID_ARGUMENT, "shmlimit_fit_key: max_key_bytes is 0");
  }
  return guarded("shmlimit_fit_key", [&] {
    const std::string k = shmlimit::fit_key(key_view(key, key_len), max_key_bytes);
    return copy_out("shmlimit_fit_key", k, out, out_capacity, len);
  });
}

}  // extern "C"
