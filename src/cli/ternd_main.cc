// ternd: Tern's host control plane, an EC2-compatible API (Query protocol, 2016-11-15) over HTTP
// that runs each instance as a supervised tern-vmm process. Thin: the work is in src/cloud/.
#include <cstdio>

int main() {
  std::fprintf(stderr, "ternd: not built yet\n");
  return 1;
}
