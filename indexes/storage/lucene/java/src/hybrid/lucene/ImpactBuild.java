package hybrid.lucene;

import java.io.Closeable;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.lucene.analysis.core.WhitespaceAnalyzer;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.IndexWriterConfig;
import org.apache.lucene.index.NoMergePolicy;
import org.apache.lucene.index.SegmentInfos;
import org.apache.lucene.search.similarities.Similarity;
import org.apache.lucene.store.Directory;
import org.apache.lucene.store.FilterDirectory;
import org.apache.lucene.store.FSDirectory;

/**
 * A batch build of an impact index on several threads, in the documents' order.
 *
 * <p>The caller submits chunks of JSON vector lines (and, optionally, one metadata line per document) in store
 * order and reads the next chunk while these threads index. Each chunk is indexed by one thread into an index of
 * its own (one writer, no merges, so its segments hold the chunk's documents in order); finish() adds the chunks'
 * segments to the final index in chunk order (IndexWriter.addIndexes copies segments as they are), so Lucene's
 * document numbers follow the store's. Several writers give several cores to Lucene's inversion, which one
 * IndexWriter fed by one thread cannot, and no thread waits on another's chunk.
 *
 * <p>With a matrix folder, each chunk's impacts are also written as one part of the in-memory impact matrix
 * (part-NNNNN.npz, as indexes/storage/sparse/impact_matrix.py writes them): the terms and impacts of the postings.
 */
public final class ImpactBuild implements Closeable {
  private final Path index;
  private final Path work;
  private final Path matrix;
  private final double ramPerChunkMB;
  private final Similarity similarity;
  private final ExecutorService pool;
  private final List<Future<?>> chunks = new ArrayList<>();
  private final AtomicInteger pending = new AtomicInteger();
  private final AtomicInteger done = new AtomicInteger();
  private final AtomicLong documents = new AtomicLong();
  private final AtomicLong postings = new AtomicLong();
  private final AtomicLong parseNanos = new AtomicLong();
  private final AtomicLong indexNanos = new AtomicLong();
  private final AtomicLong flushNanos = new AtomicLong();
  private final AtomicLong matrixNanos = new AtomicLong();
  private final ThreadLocal<ImpactDocuments.Parser> parsers;
  private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
  private volatile Throwable failure;

  /**
   * index: the new index's folder (created, replacing any index there); work: an empty folder for the chunks;
   * matrix: the folder for the impact matrix's parts, or null; threads: Lucene writers at once; ramBufferMB: their
   * indexing memory in all (a chunk that outgrows its share is flushed as more than one segment, still in order).
   */
  public ImpactBuild(String index, String work, boolean docVectors, String matrix, int threads, double ramBufferMB,
      Similarity similarity) throws IOException {
    this.index = Paths.get(index);
    this.work = Paths.get(work);
    this.matrix = matrix != null ? Paths.get(matrix) : null;
    if (this.matrix != null) {
      Files.createDirectories(this.matrix);
    }
    this.similarity = similarity;
    int n = Math.max(1, threads);
    this.ramPerChunkMB = Math.max(16.0, ramBufferMB / n);
    Files.createDirectories(this.work);
    this.parsers = ThreadLocal.withInitial(() -> new ImpactDocuments.Parser(docVectors));
    AtomicInteger named = new AtomicInteger();
    this.pool = Executors.newFixedThreadPool(n, r -> {
      Thread t = new Thread(r, "impact-build-" + named.getAndIncrement());
      t.setDaemon(true);
      return t;
    });
  }

  IndexWriterConfig config(double ramMB) {
    IndexWriterConfig config = new IndexWriterConfig(new WhitespaceAnalyzer());
    config.setSimilarity(similarity);
    config.setOpenMode(IndexWriterConfig.OpenMode.CREATE);
    config.setUseCompoundFile(false);
    config.setRAMBufferSizeMB(ramMB);
    config.setMergePolicy(NoMergePolicy.INSTANCE); // merges may reorder segments; the order is the point
    return config;
  }

  /**
   * Queue one chunk: lines of JSON vectors, and fields (one metadata line per document) or null. firstRow numbers
   * the chunk's first document (error messages, matrix rows). Never blocks: the caller bounds pending().
   */
  public synchronized int submit(byte[] lines, byte[] fields, long firstRow) {
    return queue(() -> lines, fields, firstRow);
  }

  /**
   * Queue one chunk read from a file by this build's thread (the caller reads nothing): the bytes [starts[i],
   * ends[i]) of path, in that order, each range holding whole lines.
   */
  public synchronized int submitFile(String path, long[] starts, long[] ends, byte[] fields, long firstRow) {
    return queue(() -> read(Paths.get(path), starts, ends), fields, firstRow);
  }

  private interface Source {
    byte[] bytes() throws IOException;
  }

  static byte[] read(Path path, long[] starts, long[] ends) throws IOException {
    long total = 0;
    for (int i = 0; i < starts.length; i++) {
      total += ends[i] - starts[i] + 1;
    }
    ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(total));
    try (java.nio.channels.FileChannel channel = java.nio.channels.FileChannel.open(path)) {
      for (int i = 0; i < starts.length; i++) {
        long at = starts[i];
        buf.limit(buf.position() + (int) (ends[i] - starts[i]));
        while (buf.hasRemaining()) {
          int n = channel.read(buf, at);
          if (n < 0) {
            throw new IOException(path + " ended before byte " + ends[i]);
          }
          at += n;
        }
        buf.limit(buf.capacity());
        buf.put((byte) '\n'); // a range's last line may lack its newline (the file's last line)
      }
    }
    return buf.array();
  }

  private int queue(Source source, byte[] fields, long firstRow) {
    if (failure != null) {
      throw new IllegalStateException(failureMessage());
    }
    int number = chunks.size();
    pending.incrementAndGet();
    chunks.add(pool.submit(() -> {
      try {
        if (failure == null) {
          indexChunk(number, source.bytes(), fields, firstRow);
        }
      } catch (Throwable t) {
        synchronized (this) {
          if (failure == null) {
            failure = t;
          }
        }
      } finally {
        pending.decrementAndGet();
        done.incrementAndGet();
      }
      return null;
    }));
    return number;
  }

  /** Chunks queued or being indexed. */
  public int pending() {
    return pending.get();
  }

  /** Chunks finished (or abandoned after a failure). */
  public int done() {
    return done.get();
  }

  /** The first failure's message, or null. */
  public String failureMessage() {
    Throwable t = failure;
    if (t == null) {
      return null;
    }
    if (t instanceof ImpactDocuments.BadDocument) {
      return t.getMessage();
    }
    return t.getClass().getName() + ": " + t.getMessage();
  }

  /** True when the first failure is a refused document (the input's fault, not the machine's). */
  public boolean badInput() {
    return failure instanceof ImpactDocuments.BadDocument;
  }

  public static String chunkName(int number) {
    return String.format("chunk-%05d", number);
  }

  /** A chunk's folder is scratch (its segments are copied into the index, which is synced): no fsync there. */
  static Directory unsynced(Directory dir) {
    return new FilterDirectory(dir) {
      @Override
      public void sync(java.util.Collection<String> names) {}

      @Override
      public void syncMetaData() {}
    };
  }

  /**
   * One chunk into an index of its own, in three passes: read every line (terms as ids of this thread's
   * dictionary, into arrays for the whole chunk), index the documents from those arrays, then write the chunk's
   * matrix part from the same arrays. Reading apart from indexing keeps each pass's tables in the cache (reading
   * interleaved with Lucene's inversion cost it twice the CPU).
   */
  private void indexChunk(int number, byte[] lines, byte[] fields, long firstRow) throws IOException {
    long cpu0 = THREADS.getCurrentThreadCpuTime();
    long wall0 = System.nanoTime();
    ImpactDocuments.Parser parser = parsers.get();
    int[] at = ImpactDocuments.lines(lines);
    int[] meta = fields != null ? ImpactDocuments.lines(fields) : null;
    if (meta != null && meta.length != at.length) {
      throw new ImpactDocuments.BadDocument("chunk at document " + firstRow + ": " + meta.length / 2
          + " metadata lines for " + at.length / 2 + " documents");
    }
    int rows = at.length / 2;
    String[] ids = new String[rows];
    long[] indptr = new long[rows + 1];
    int[] terms = new int[Math.max(1024, lines.length / 12)];
    int[] weights = new int[terms.length];
    int nnz = 0;
    for (int r = 0; r < rows; r++) {
      parser.parse(lines, at[2 * r], at[2 * r + 1] - at[2 * r], firstRow + r);
      int n = parser.size;
      if (nnz + n > terms.length) {
        int grown = Math.max(terms.length + terms.length / 2, nnz + n);
        terms = Arrays.copyOf(terms, grown);
        weights = Arrays.copyOf(weights, grown);
      }
      System.arraycopy(parser.ids, 0, terms, nnz, n);
      System.arraycopy(parser.freqs, 0, weights, nnz, n);
      nnz += n;
      indptr[r + 1] = nnz;
      ids[r] = parser.id;
    }
    long t1 = System.nanoTime();
    long flushed;
    try (Directory dir = unsynced(FSDirectory.open(work.resolve(chunkName(number))));
        IndexWriter writer = new IndexWriter(dir, config(ramPerChunkMB))) {
      for (int r = 0; r < rows; r++) {
        int from = (int) indptr[r];
        int to = (int) indptr[r + 1];
        writer.addDocument(meta != null
            ? parser.document(ids[r], terms, weights, from, to, fields, meta[2 * r], meta[2 * r + 1] - meta[2 * r],
                firstRow + r)
            : parser.document(ids[r], terms, weights, from, to, null, 0, 0, firstRow + r));
      }
      long t2 = System.nanoTime();
      writer.commit();
      flushed = System.nanoTime() - t2;
    }
    long t3 = System.nanoTime();
    if (matrix != null) {
      writePart(matrix.resolve(String.format("part-%05d.npz", number)), firstRow, rows, indptr, terms, weights, nnz,
          parser.dictionary);
    }
    long t4 = System.nanoTime();
    // Stage times are wall clock inside this thread, which counts time the thread waited for a core; scaled by
    // the chunk's CPU time over its wall time, they add up to the CPU this chunk used.
    double scale = (THREADS.getCurrentThreadCpuTime() - cpu0) / (double) Math.max(1, t4 - wall0);
    parseNanos.addAndGet((long) ((t1 - wall0) * scale));
    indexNanos.addAndGet((long) ((t3 - t1 - flushed) * scale));
    flushNanos.addAndGet((long) (flushed * scale));
    matrixNanos.addAndGet((long) ((t4 - t3) * scale));
    documents.addAndGet(rows);
    postings.addAndGet(nnz);
  }

  /**
   * Wait for every chunk, then make the index: the chunks' segments in chunk order, committed with
   * hybrid.seq = 0 (as a live index's first commit). Returns a JSON summary of the build.
   */
  public String finish() throws IOException, InterruptedException {
    for (Future<?> chunk : chunks) {
      try {
        chunk.get();
      } catch (ExecutionException e) {
        if (failure == null) {
          failure = e.getCause();
        }
      }
    }
    pool.shutdown();
    if (failure != null) {
      throw new IllegalStateException(failureMessage());
    }
    long t0 = System.nanoTime();
    Directory[] parts = new Directory[chunks.size()];
    try (Directory dir = FSDirectory.open(index);
        IndexWriter writer = new IndexWriter(dir, config(16.0))) {
      for (int i = 0; i < parts.length; i++) {
        parts[i] = FSDirectory.open(work.resolve(chunkName(i)));
      }
      writer.addIndexes(parts);
      long t1 = System.nanoTime();
      Map<String, String> data = new HashMap<>();
      data.put("hybrid.seq", "0");
      writer.setLiveCommitData(data.entrySet());
      writer.commit();
      long t2 = System.nanoTime();
      int segments = SegmentInfos.readLatestCommit(dir).size();
      return String.format(
          "{\"documents\": %d, \"postings\": %d, \"chunks\": %d, \"segments\": %d, \"parse_cpu_s\": %.3f, "
              + "\"index_cpu_s\": %.3f, \"flush_cpu_s\": %.3f, \"matrix_cpu_s\": %.3f, \"add_indexes_s\": %.3f, "
              + "\"commit_s\": %.3f}",
          documents.get(), postings.get(), parts.length, segments, parseNanos.get() / 1e9,
          indexNanos.get() / 1e9, flushNanos.get() / 1e9, matrixNanos.get() / 1e9, (t1 - t0) / 1e9,
          (t2 - t1) / 1e9);
    } finally {
      for (Directory part : parts) {
        if (part != null) {
          part.close();
        }
      }
    }
  }

  /** finish() as a static method: pyjnius binds an instance method's target on an object all instances share, so
   * a long call on an instance would have to hold the caller's JNI lock throughout; a static one need not. */
  public static String finishBuild(ImpactBuild build) throws IOException, InterruptedException {
    return build.finish();
  }

  /** Stop the threads (after a failure on the caller's side); the work folder is the caller's to remove. */
  @Override
  public void close() {
    pool.shutdownNow();
  }

  /**
   * The chunk's part of the impact matrix, as impact_matrix.write_part writes it: docnos, CSR indptr, int32 terms
   * into the part's own vocab (terms renumbered here, in place, in order of first appearance), weights (uint16
   * where they fit), vocab, seq 0.
   */
  static void writePart(Path path, long firstRow, int rows, long[] indptr, int[] terms, int[] weights, int nnz,
      TermDictionary dictionary) throws IOException {
    int[] column = new int[dictionary.size()]; // dictionary id -> column + 1 (0: not in this part)
    String[] names = new String[Math.min(nnz, dictionary.size())];
    int columns = 0;
    int max = 0;
    for (int i = 0; i < nnz; i++) {
      int id = terms[i];
      int c = column[id] - 1;
      if (c < 0) {
        c = columns++;
        column[id] = c + 1;
        names[c] = dictionary.name(id);
      }
      terms[i] = c;
      max = Math.max(max, weights[i]);
    }
    long[] docnos = new long[rows];
    for (int i = 0; i < rows; i++) {
      docnos[i] = firstRow + i;
    }
    try (Npz npz = new Npz(path)) {
      npz.longs("docnos", docnos, rows);
      npz.longs("indptr", indptr, rows + 1);
      npz.ints("terms", terms, nnz);
      if (max <= 0xffff) {
        npz.unsignedShorts("weights", weights, nnz);
      } else {
        npz.ints("weights", weights, nnz);
      }
      npz.strings("vocab", names, columns);
      npz.longs("seq", new long[] {0}, 1);
    }
  }
}
