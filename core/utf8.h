// UTF-8 validity, for text that crosses the wire (protobuf strings must be valid UTF-8).
#pragma once

#include <string>
#include <string_view>

namespace pagoda {

// Well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s);
// s with every ill-formed byte sequence replaced by U+FFFD.
std::string sanitize_utf8(std::string_view s);

}  // namespace pagoda
