#include "server/auth/key_store.h"

namespace pagoda::auth {

KeyStore::KeyStore(const KeysFile& keys) : authenticator_(keys), limiter_(keys.tenants) {}

StatusOr<std::unique_ptr<KeyStore>> KeyStore::open(const std::string& path) {
  PAGODA_ASSIGN_OR_RETURN(KeysFile keys, load_keys_file(path));
  return std::make_unique<KeyStore>(keys);
}

Status KeyStore::reload(const std::string& path, LimitTime now) {
  PAGODA_ASSIGN_OR_RETURN(KeysFile keys, load_keys_file(path));  // old keys kept on error
  apply(keys, now);
  return OkStatus();
}

void KeyStore::apply(const KeysFile& keys, LimitTime now) {
  std::lock_guard lock(mu_);
  limiter_.update(keys.tenants, now);
  authenticator_.replace(keys);
  ++generation_;
}

uint64_t KeyStore::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

}  // namespace pagoda::auth
