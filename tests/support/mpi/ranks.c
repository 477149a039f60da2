/* ranks: what a working MPI job across nodes shows.
 *
 * Every rank sends rank 0 its host name and first non-loopback IPv4 address; rank 0
 * prints one line per rank, the sum of all ranks by MPI_Allreduce, and whether a
 * ring send/receive (each rank sends its rank to the next and receives the one
 * before) came round. A wrong sum or ring aborts the job (exit status non-zero).
 *
 *   rank 0 of 3 host=node-a address=10.0.0.2
 *   ...
 *   sum=3 expected=3
 *   ring=ok
 */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <mpi.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LINE 256

/* The first IPv4 address that is not loopback, or "-" when there is none. */
static void first_address(char *out, size_t size) {
    struct ifaddrs *all, *each;
    snprintf(out, size, "-");
    if (getifaddrs(&all) != 0)
        return;
    for (each = all; each != NULL; each = each->ifa_next) {
        if (each->ifa_addr == NULL || each->ifa_addr->sa_family != AF_INET)
            continue;
        struct in_addr address = ((struct sockaddr_in *)each->ifa_addr)->sin_addr;
        if ((ntohl(address.s_addr) >> 24) == 127)
            continue;
        inet_ntop(AF_INET, &address, out, (socklen_t)size);
        break;
    }
    freeifaddrs(all);
}

int main(int argc, char **argv) {
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    char host[LINE / 2] = "", address[INET_ADDRSTRLEN];
    gethostname(host, sizeof host - 1);
    first_address(address, sizeof address);
    char line[LINE];
    snprintf(line, sizeof line, "rank %d of %d host=%s address=%s", rank, size, host, address);
    static char lines[4096][LINE];
    if (size > 4096)
        MPI_Abort(MPI_COMM_WORLD, 2);
    MPI_Gather(line, LINE, MPI_CHAR, lines, LINE, MPI_CHAR, 0, MPI_COMM_WORLD);

    long mine = rank, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

    int right = (rank + 1) % size, left = (rank + size - 1) % size, got = -1;
    MPI_Sendrecv(&rank, 1, MPI_INT, right, 7, &got, 1, MPI_INT, left, 7, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    int ring_ok = got == left, all_ok = 0;
    MPI_Allreduce(&ring_ok, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);

    long expected = (long)size * (size - 1) / 2;
    if (rank == 0) {
        for (int each = 0; each < size; each++)
            printf("%s\n", lines[each]);
        printf("sum=%ld expected=%ld\n", sum, expected);
        printf("ring=%s\n", all_ok ? "ok" : "broken");
        fflush(stdout);
    }
    if (sum != expected || !all_ok)
        MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return 0;
}
