// The current time as the project writes it in metadata, ledgers and attestations.
#pragma once
#include <string>

namespace bd {

// UTC, ISO 8601 to the second: 2026-12-02T10:00:00Z.
std::string utc_now();

}  // namespace bd
