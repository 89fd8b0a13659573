package hybrid.lucene;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.lucene.analysis.core.WhitespaceAnalyzer;
import org.apache.lucene.document.BinaryDocValuesField;
import org.apache.lucene.document.Document;
import org.apache.lucene.document.Field;
import org.apache.lucene.document.FieldType;
import org.apache.lucene.document.StringField;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.IndexWriterConfig;
import org.apache.lucene.search.similarities.Similarity;
import org.apache.lucene.store.FSDirectory;
import org.apache.lucene.util.BytesRef;

/**
 * The ceiling a build is measured against (eval/bench/lucene_ceiling.py): the same postings indexed by a minimal
 * loop and nothing else. A vectors file is parsed into memory first (not timed); then threads take documents from
 * a shared counter and add them to one IndexWriter set up as IndexCollection sets it up (default merges, no
 * order kept), and the writer commits. No JSON, no Python, no matrix, no document order.
 */
public final class Ceiling {
  private Ceiling() {}

  /** Returns {"documents", "postings", "seconds"} as JSON. limit: at most this many documents (0: all). */
  public static String run(String vectors, String index, int threads, double ramBufferMB, boolean docVectors,
      Similarity similarity, int limit) throws IOException, InterruptedException {
    byte[] data = Files.readAllBytes(Paths.get(vectors));
    int[] at = ImpactDocuments.lines(data);
    int n = limit > 0 ? Math.min(limit, at.length / 2) : at.length / 2;
    String[] ids = new String[n];
    BytesRef[][] terms = new BytesRef[n][];
    int[][] freqs = new int[n][];
    ImpactDocuments.Parser parser = new ImpactDocuments.Parser(docVectors);
    long postings = 0;
    for (int i = 0; i < n; i++) {
      parser.parse(data, at[2 * i], at[2 * i + 1] - at[2 * i], i);
      ids[i] = parser.id;
      terms[i] = new BytesRef[parser.size];
      for (int j = 0; j < parser.size; j++) {
        terms[i][j] = parser.dictionary.ref(parser.ids[j]);
      }
      freqs[i] = Arrays.copyOf(parser.freqs, parser.size);
      postings += parser.size;
    }
    data = null;
    FieldType type = ImpactDocuments.contentsType(docVectors);
    IndexWriterConfig config = new IndexWriterConfig(new WhitespaceAnalyzer());
    config.setSimilarity(similarity);
    config.setOpenMode(IndexWriterConfig.OpenMode.CREATE);
    config.setUseCompoundFile(false);
    config.setRAMBufferSizeMB(ramBufferMB);
    AtomicInteger next = new AtomicInteger();
    List<Throwable> failures = new ArrayList<>();
    long start = System.nanoTime();
    try (FSDirectory dir = FSDirectory.open(Paths.get(index)); IndexWriter writer = new IndexWriter(dir, config)) {
      Thread[] workers = new Thread[Math.max(1, threads)];
      for (int w = 0; w < workers.length; w++) {
        workers[w] = new Thread(() -> {
          ImpactDocuments.PairStream stream = new ImpactDocuments.PairStream();
          try {
            for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
              Document doc = new Document();
              doc.add(new StringField(ImpactDocuments.ID, ids[i], Field.Store.YES));
              doc.add(new BinaryDocValuesField(ImpactDocuments.ID, new BytesRef(ids[i])));
              stream.set(terms[i], freqs[i], terms[i].length);
              doc.add(new Field(ImpactDocuments.CONTENTS, stream, type));
              writer.addDocument(doc);
            }
          } catch (Throwable t) {
            synchronized (failures) {
              failures.add(t);
            }
          }
        });
        workers[w].start();
      }
      for (Thread worker : workers) {
        worker.join();
      }
      if (!failures.isEmpty()) {
        throw new IOException("ceiling run failed", failures.get(0));
      }
      writer.commit();
    }
    double seconds = (System.nanoTime() - start) / 1e9;
    return String.format("{\"documents\": %d, \"postings\": %d, \"seconds\": %.3f}", n, postings, seconds);
  }
}
