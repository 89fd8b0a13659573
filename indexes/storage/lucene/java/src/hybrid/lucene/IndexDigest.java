package hybrid.lucene;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import org.apache.lucene.index.BinaryDocValues;
import org.apache.lucene.index.DirectoryReader;
import org.apache.lucene.index.FieldInfo;
import org.apache.lucene.index.FieldInfos;
import org.apache.lucene.index.MultiDocValues;
import org.apache.lucene.index.MultiTerms;
import org.apache.lucene.index.NumericDocValues;
import org.apache.lucene.index.PostingsEnum;
import org.apache.lucene.index.StoredFields;
import org.apache.lucene.index.TermVectors;
import org.apache.lucene.index.Terms;
import org.apache.lucene.index.TermsEnum;
import org.apache.lucene.search.DocIdSetIterator;
import org.apache.lucene.store.FSDirectory;
import org.apache.lucene.util.BytesRef;

/**
 * What an impact index holds, section by section, as sha256 digests over a canonical listing (documents in Lucene's
 * order): two indexes with equal digests hold the same documents in the same order with the same ids, norms,
 * postings (term by term: document, frequency) and term vectors (terms and frequencies). Segments may differ.
 * Used by the test that compares the impact writer with Anserini's path, and by its benchmark at scale.
 */
public final class IndexDigest {
  private IndexDigest() {}

  private static final class Section {
    final MessageDigest sha;
    long items;

    Section() {
      try {
        sha = MessageDigest.getInstance("SHA-256");
      } catch (NoSuchAlgorithmException e) {
        throw new IllegalStateException(e);
      }
    }

    void add(String text) {
      sha.update(text.getBytes(StandardCharsets.UTF_8));
      sha.update((byte) '\n');
      items++;
    }

    String hex() {
      return HexFormat.of().formatHex(sha.digest());
    }
  }

  private static String describe(FieldInfo info) {
    if (info == null) {
      return "absent";
    }
    return info.getIndexOptions() + " vectors=" + info.hasVectors() + " norms=" + info.hasNorms() + " docvalues="
        + info.getDocValuesType() + " points=" + info.getPointDimensionCount();
  }

  /** sha256 per section of the index at path, field the impacts' field (contents), as JSON; with dumpDocs > 0 the
   * listing of the first dumpDocs documents' ids, norms and vectors is included as text (for a failing test). */
  public static String digest(String path, String field, int dumpDocs) throws IOException {
    try (FSDirectory dir = FSDirectory.open(Paths.get(path)); DirectoryReader reader = DirectoryReader.open(dir)) {
      StringBuilder dump = new StringBuilder();
      FieldInfos infos = FieldInfos.getMergedFieldInfos(reader);
      Section schema = new Section();
      java.util.TreeMap<String, String> fields = new java.util.TreeMap<>();
      for (FieldInfo info : infos) {
        fields.put(info.name, describe(info));
      }
      fields.forEach((name, description) -> schema.add(name + ": " + description));
      int n = reader.maxDoc();
      Section ids = new Section();
      Section norms = new Section();
      Section vectors = new Section();
      StoredFields stored = reader.storedFields();
      BinaryDocValues idValues = MultiDocValues.getBinaryValues(reader, ImpactDocuments.ID);
      NumericDocValues normValues = MultiDocValues.getNormValues(reader, field);
      TermVectors termVectors = reader.termVectors();
      boolean positions = false;
      for (int doc = 0; doc < n; doc++) {
        String id = stored.document(doc).get(ImpactDocuments.ID);
        String values = idValues != null && idValues.advanceExact(doc) ? idValues.binaryValue().utf8ToString() : null;
        ids.add(doc + " " + id + " " + values);
        String norm = normValues != null && normValues.advanceExact(doc) ? Long.toString(normValues.longValue()) : "-";
        norms.add(doc + " " + norm);
        Terms vector = termVectors.get(doc, field);
        StringBuilder line = new StringBuilder().append(doc);
        if (vector != null) {
          positions |= vector.hasPositions();
          TermsEnum it = vector.iterator();
          for (BytesRef term = it.next(); term != null; term = it.next()) {
            line.append(' ').append(term.utf8ToString()).append('=').append(it.totalTermFreq());
          }
        } else {
          line.append(" none");
        }
        vectors.add(line.toString());
        if (doc < dumpDocs) {
          dump.append(doc).append(' ').append(id).append(' ').append(values).append(" norm=").append(norm)
              .append(" vector:").append(line.substring(Integer.toString(doc).length())).append('\n');
        }
      }
      Section postings = new Section();
      Terms terms = MultiTerms.getTerms(reader, field);
      String stats = "none";
      long termCount = 0;
      long postingCount = 0;
      if (terms != null) {
        stats = "docCount=" + terms.getDocCount() + " sumDocFreq=" + terms.getSumDocFreq() + " sumTotalTermFreq="
            + terms.getSumTotalTermFreq();
        TermsEnum it = terms.iterator();
        PostingsEnum docs = null;
        for (BytesRef term = it.next(); term != null; term = it.next()) {
          StringBuilder line = new StringBuilder(term.utf8ToString()).append(" df=").append(it.docFreq())
              .append(" ttf=").append(it.totalTermFreq()).append(':');
          docs = it.postings(docs, PostingsEnum.FREQS);
          for (int doc = docs.nextDoc(); doc != DocIdSetIterator.NO_MORE_DOCS; doc = docs.nextDoc()) {
            line.append(' ').append(doc).append('=').append(docs.freq());
            postingCount++;
          }
          postings.add(line.toString());
          termCount++;
        }
      }
      return String.format(
          "{\"documents\": %d, \"segments\": %d, \"terms\": %d, \"postings\": %d, \"stats\": \"%s\", "
              + "\"schema\": \"%s\", \"ids\": \"%s\", \"norms\": \"%s\", \"postings_sha256\": \"%s\", "
              + "\"vectors\": \"%s\", \"vector_positions\": %b, \"dump\": \"%s\"}",
          n, reader.leaves().size(), termCount, postingCount, stats, schema.hex(), ids.hex(), norms.hex(),
          postings.hex(), vectors.hex(), positions, dump.toString().replace("\\", "\\\\").replace("\"", "\\\"")
              .replace("\n", "\\n"));
    }
  }
}
