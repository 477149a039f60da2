/* allreduce: the time of ITERATIONS (default 1000) MPI_Allreduce calls of 8 bytes.
 *
 * After ten untimed calls and a barrier, rank 0 prints
 *   allreduce iterations=1000 bytes=8 seconds=0.001234
 * and the job fails if a sum comes out wrong.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int reduce(int times, int size) {
    for (int i = 0; i < times; i++) {
        double one = 1.0, total = 0.0;
        MPI_Allreduce(&one, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        if (total != (double)size)
            return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int iterations = argc > 1 ? atoi(argv[1]) : 1000;
    if (iterations < 1)
        iterations = 1000;

    int ok = reduce(10, size);
    MPI_Barrier(MPI_COMM_WORLD);
    double began = MPI_Wtime();
    ok = reduce(iterations, size) && ok;
    double seconds = MPI_Wtime() - began;
    if (!ok)
        MPI_Abort(MPI_COMM_WORLD, 1);
    if (rank == 0) {
        printf("allreduce iterations=%d bytes=%zu seconds=%.6f\n", iterations, sizeof(double),
               seconds);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
