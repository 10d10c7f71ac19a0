// Stand-ins for the six C/C++ runtime symbols that the ml-metadata and
// tensorflow-data-validation 1.21 wheels (built against glibc 2.39 / GCC 13+)
// need and that Debian 12 (glibc 2.36, libstdc++ from GCC 12) lacks.
// Each is exactly equivalent for what those wheels use it for; see
// ../../README.md ("The runtime compatibility step").
#include <cxxabi.h>
#include <cstdlib>
#include <exception>
#include <iostream>  // its static ios_base::Init is what ios_base_library_init guarantees

extern "C" {

// C23 only adds "0b" binary prefixes to these; the wheels parse decimal text.
long __isoc23_strtol(const char* s, char** end, int base) { return std::strtol(s, end, base); }
unsigned long __isoc23_strtoul(const char* s, char** end, int base) {
  return std::strtoul(s, end, base);
}
long long __isoc23_strtoll(const char* s, char** end, int base) {
  return std::strtoll(s, end, base);
}
unsigned long long __isoc23_strtoull(const char* s, char** end, int base) {
  return std::strtoull(s, end, base);
}

// GCC 13 emits calls to this when an exception escapes a noexcept function.
void __cxa_call_terminate(void* exception) noexcept {
  if (exception != nullptr) __cxxabiv1::__cxa_begin_catch(exception);
  std::terminate();
}

}  // extern "C"

namespace std {
// GCC 13 references this from every TU including <iostream>; including
// <iostream> above already initialises the streams when this library loads.
void ios_base_library_init() {}
}  // namespace std
