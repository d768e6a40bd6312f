/* A shared library whose constructor leaves a mark: the kernel tests preload it into a governed
 * program and assert on the mark (the constructor ran) or its absence (the mapping was refused
 * before any of its code ran). Built by tests/build.rs with the system C compiler. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void mcpg_mark(void) {
    const char *p = getenv("MCPG_PRELOAD_MARK");
    if (p) {
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            (void)write(fd, "ran\n", 4);
            close(fd);
        }
    }
}
