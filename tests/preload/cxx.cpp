// SPDX-License-Identifier: MIT
// C++ allocation under the preload library: libstdc++'s operator new and
// delete (plain, sized, aligned, nothrow, arrays) end in malloc and free,
// so they must land in managed memory and survive heavy container use.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

static bool managed(const void *p)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long lo, hi, a = (unsigned long)p;
	char line[512];
	bool found = false;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo &&
		    a < hi) {
			found = hi - lo >= (1UL << 30);
			break;
		}
	if (f)
		fclose(f);
	return found;
}

#define CHECK(c, what)                                          \
	do {                                                    \
		if (!(c)) {                                     \
			fprintf(stderr, "FAIL: %s\n", what);    \
			return 1;                               \
		}                                               \
	} while (0)

struct alignas(256) Wide {
	char bytes[300];
};

int main()
{
	int *i = new int(42);
	CHECK(managed(i) && *i == 42, "new int");
	delete i;
	Wide *w = new Wide;
	CHECK(managed(w) && (uintptr_t)w % 256 == 0, "aligned new");
	delete w;
	Wide *wa = new Wide[10];
	CHECK((uintptr_t)wa % 256 == 0, "aligned new[]");
	delete[] wa;
	char *nt = new (std::nothrow) char[1 << 20];
	CHECK(nt && managed(nt), "nothrow new[]");
	delete[] nt;
	void *raw = ::operator new(1000, std::align_val_t(4096));
	CHECK((uintptr_t)raw % 4096 == 0, "operator new aligned");
	::operator delete(raw, 1000, std::align_val_t(4096));

	std::unordered_map<std::string, std::vector<int>> m;
	for (int k = 0; k < 200000; k++) {
		std::string key = "key-" + std::to_string(k % 50000);
		m[key].push_back(k);
		if (k % 7 == 0)
			m.erase("key-" + std::to_string((k * 13) % 50000));
	}
	size_t total = 0;
	for (auto &kv : m)
		for (int v : kv.second)
			total += (size_t)v % 3;
	std::map<int, std::string> ordered;
	for (int k = 0; k < 100000; k++)
		ordered[k] = std::string((size_t)(k % 100), 'x');
	CHECK(ordered[99999].size() == 99, "map of strings");
	CHECK(managed(&ordered.begin()->second), "map nodes are managed");
	printf("ok cxx %zu %zu\n", m.size(), total);
	return 0;
}
