package hybrid.lucene;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.tokenattributes.BytesTermAttribute;
import org.apache.lucene.analysis.tokenattributes.TermFrequencyAttribute;
import org.apache.lucene.document.BinaryDocValuesField;
import org.apache.lucene.document.Document;
import org.apache.lucene.document.DoublePoint;
import org.apache.lucene.document.Field;
import org.apache.lucene.document.FieldType;
import org.apache.lucene.document.StringField;
import org.apache.lucene.index.IndexOptions;
import org.apache.lucene.index.IndexWriter;
import org.apache.lucene.index.Term;
import org.apache.lucene.util.BytesRef;

/**
 * Impact documents from Anserini's JSON vector lines ({"id": ..., "vector": {term: impact}}), with each impact
 * handed to Lucene as the term's frequency.
 *
 * <p>Why: Anserini's JsonVectorCollection spells a document out as a text that repeats every term impact times
 * (48x more tokens than postings on the resampled corpus) and Lucene analyzes every repetition. Here a token
 * stream yields each term once with a TermFrequencyAttribute, which is what DelimitedTermFrequencyTokenFilter
 * does after parsing "term|freq" text; the JSON parser frames the terms, so no delimiter can collide with a term
 * (SPLADE's vocabulary holds '|', '"' and '\'), and each term's UTF-8 bytes go to Lucene as they are.
 *
 * <p>The fields are those DefaultLuceneDocumentGenerator writes for JsonVectorCollection with -impact
 * -pretokenized [-storeDocvectors]: "id" as a stored StringField and as binary doc values, "contents" indexed
 * DOCS_AND_FREQS with norms (ImpactSimilarity writes 1 for every document) and, with doc vectors, term vectors.
 * Lucene refuses term-vector positions with custom frequencies, so the term vectors hold terms and frequencies
 * only (Anserini's also held the positions of the repeated pseudo-tokens, which nothing reads).
 *
 * <p>A term must be what Anserini's whitespace tokenizer keeps as one token: not empty, no whitespace
 * (Character.isWhitespace) and at most 255 characters; anything else is refused, never split. An impact must
 * be a number: it is truncated toward zero (as Python's int()), a term of impact 0 or less is left out (as
 * Anserini's pseudo-text leaves it out), and an impact beyond 2^31 - 1 is refused. Duplicate keys are refused.
 */
public final class ImpactDocuments {
  public static final String ID = "id";
  public static final String CONTENTS = "contents";
  /** WhitespaceTokenizer's default maximum token length: longer terms would be cut into pieces. */
  public static final int MAX_TERM_CHARS = 255;

  static final JsonFactory JSON = JsonFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build();

  private ImpactDocuments() {}

  /** The "contents" field's type: as Anserini's generator sets it (not stored, no positions). */
  public static FieldType contentsType(boolean docVectors) {
    FieldType type = new FieldType();
    type.setStored(false);
    type.setTokenized(true);
    type.setIndexOptions(IndexOptions.DOCS_AND_FREQS);
    type.setStoreTermVectors(docVectors);
    type.freeze();
    return type;
  }

  /** Why term cannot be an impact term, or null if it can. */
  static String refusal(String term) {
    int n = term.length();
    if (n == 0) {
      return "an empty term";
    }
    if (n > MAX_TERM_CHARS) {
      return "term '" + term.substring(0, 40) + "...' is longer than " + MAX_TERM_CHARS + " characters";
    }
    for (int i = 0; i < n; ) {
      int c = term.codePointAt(i);
      if (Character.isWhitespace(c)) {
        return "term '" + term + "' contains whitespace";
      }
      i += Character.charCount(c);
    }
    return null;
  }

  /** A refused line: the message names the row and, when known, the document's id. */
  public static final class BadDocument extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    BadDocument(String message) {
      super(message);
    }
  }

  /** Each term once, as its UTF-8 bytes, with its impact as the frequency. */
  static final class PairStream extends TokenStream {
    private final BytesTermAttribute term = addAttribute(BytesTermAttribute.class);
    private final TermFrequencyAttribute frequency = addAttribute(TermFrequencyAttribute.class);
    private BytesRef[] refs;
    private TermDictionary dictionary;
    private int[] ids;
    private int[] freqs;
    private int from;
    private int to;
    private int at;

    /** The terms ids[from, to) of dictionary, with the frequencies freqs[from, to). */
    void set(TermDictionary dictionary, int[] ids, int[] freqs, int from, int to) {
      this.dictionary = dictionary;
      this.refs = null;
      this.ids = ids;
      this.freqs = freqs;
      this.from = from;
      this.to = to;
    }

    void set(BytesRef[] refs, int[] freqs, int size) {
      this.refs = refs;
      this.dictionary = null;
      this.freqs = freqs;
      this.from = 0;
      this.to = size;
    }

    @Override
    public boolean incrementToken() {
      if (at >= to) {
        return false;
      }
      clearAttributes();
      term.setBytesRef(refs != null ? refs[at] : dictionary.ref(ids[at]));
      frequency.setTermFrequency(freqs[at]);
      at++;
      return true;
    }

    @Override
    public void reset() throws IOException {
      super.reset();
      at = from;
    }
  }

  /**
   * One line parsed: the id, and the terms with a positive impact (ids into this parser's dictionary) in the
   * line's order. Lines as our writers and Anserini's format write them are read by a scanner of that shape;
   * anything else (escapes, floats, other keys, a duplicate, a bad term) goes to Jackson, whose reading is the
   * reference and whose errors are the messages. Not thread-safe: one per thread, reused document after document.
   */
  public static final class Parser {
    final TermDictionary dictionary = new TermDictionary();
    String id;
    int[] ids = new int[1024];
    int[] freqs = new int[1024];
    int size;
    private int[] seen = new int[1 << 12];
    private int stamp;
    private final PairStream stream = new PairStream();
    private final FieldType type;
    private final Document document = new Document();
    private final StringField idField = new StringField(ID, "", Field.Store.YES);
    private final BinaryDocValuesField idValues = new BinaryDocValuesField(ID, new BytesRef());
    private final Field contents;

    public Parser(boolean docVectors) {
      type = contentsType(docVectors);
      contents = new Field(CONTENTS, stream, type);
      document.add(idField);
      document.add(idValues);
      document.add(contents);
    }

    /** Parse the JSON object in buf[off, off + len); row numbers the document in error messages. */
    void parse(byte[] buf, int off, int len, long row) throws IOException {
      if (!scan(buf, off, off + len)) {
        strict(buf, off, len, row);
      }
    }

    // ---- the scanner: {"id": "...", "vector": {"term": 12, ...}} with any JSON whitespace, keys in either order

    private int p;
    private int end;
    private byte[] b;

    private boolean scan(byte[] buf, int from, int to) {
      b = buf;
      p = from;
      end = to;
      id = null;
      size = 0;
      if (++stamp == Integer.MAX_VALUE) {
        Arrays.fill(seen, 0);
        stamp = 1;
      }
      boolean vector = false;
      if (!expect('{')) {
        return false;
      }
      do {
        int key = stringStart();
        if (key < 0) {
          return false;
        }
        int keyLength = p - 1 - key;
        if (!expect(':')) {
          return false;
        }
        if (keyLength == 2 && b[key] == 'i' && b[key + 1] == 'd') {
          int s = stringStart();
          if (id != null || s < 0) {
            return false;
          }
          for (int i = s; i < p - 1; i++) {
            if (b[i] < 0) {
              return false; // not ASCII: the strict parser checks the UTF-8
            }
          }
          id = new String(b, s, p - 1 - s, StandardCharsets.US_ASCII);
        } else if (keyLength == 6 && isVector(key)) {
          if (vector || !vector()) {
            return false;
          }
          vector = true;
        } else {
          return false;
        }
      } while (expect(','));
      if (!expect('}')) {
        return false;
      }
      skipSpace();
      return p == end && id != null && vector;
    }

    private boolean isVector(int at) {
      return b[at] == 'v' && b[at + 1] == 'e' && b[at + 2] == 'c' && b[at + 3] == 't' && b[at + 4] == 'o'
          && b[at + 5] == 'r';
    }

    /** The vector's object at p: every term with a positive integer impact, each term once. One loop over locals
     * (the term's hash taken as it is scanned): this is most of a document's reading. */
    private boolean vector() {
      final byte[] b = this.b;
      final int end = this.end;
      int p = skip(b, this.p, end);
      if (p >= end || b[p] != '{') {
        return false;
      }
      p = skip(b, p + 1, end);
      if (p < end && b[p] == '}') {
        this.p = p + 1;
        return true;
      }
      final TermDictionary dictionary = this.dictionary;
      final int stamp = this.stamp;
      int[] seen = this.seen;
      int[] ids = this.ids;
      int[] freqs = this.freqs;
      int size = 0;
      try {
        while (true) {
          if (p >= end || b[p] != '"') {
            return false;
          }
          int s = ++p;
          int h = TermDictionary.SEED;
          byte c = 0;
          while (p < end && (c = b[p]) != '"') {
            if (c == '\\' || (c >= 0 && c < 0x20)) {
              return false; // an escape or a control byte: the strict parser decides
            }
            h = (h ^ (c & 0xff)) * TermDictionary.PRIME;
            p++;
          }
          if (p >= end) {
            return false;
          }
          int termEnd = p;
          p = skip(b, p + 1, end);
          if (p >= end || b[p] != ':') {
            return false;
          }
          p = skip(b, p + 1, end);
          int digits = p;
          long weight = 0;
          while (p < end && p - digits < 11 && (c = b[p]) >= '0' && c <= '9') {
            weight = weight * 10 + (c - '0');
            p++;
          }
          int count = p - digits;
          if (count == 0 || count > 10 || (count > 1 && b[digits] == '0') || weight == 0 || weight > Integer.MAX_VALUE) {
            return false; // a sign, zero, a leading zero, a large number: the strict parser decides
          }
          if (p < end && ((c = b[p]) == '.' || c == 'e' || c == 'E' || (c >= '0' && c <= '9'))) {
            return false;
          }
          int term = dictionary.id(b, s, termEnd - s, TermDictionary.finish(h));
          if (term < 0) {
            return false;
          }
          if (term >= seen.length) {
            seen = this.seen = Arrays.copyOf(seen, Math.max(seen.length * 2, term + 1));
          }
          if (seen[term] == stamp) {
            return false; // a duplicate key
          }
          seen[term] = stamp;
          if (size == ids.length) {
            ids = this.ids = Arrays.copyOf(ids, size * 2);
            freqs = this.freqs = Arrays.copyOf(freqs, size * 2);
          }
          ids[size] = term;
          freqs[size] = (int) weight;
          size++;
          p = skip(b, p, end);
          if (p < end && b[p] == ',') {
            p = skip(b, p + 1, end);
          } else if (p < end && b[p] == '}') {
            this.p = p + 1;
            return true;
          } else {
            return false;
          }
        }
      } finally {
        this.size = size;
      }
    }

    private static int skip(byte[] b, int p, int end) {
      while (p < end) {
        byte c = b[p];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
          return p;
        }
        p++;
      }
      return p;
    }

    /** After optional whitespace, a string without escapes or control bytes; returns its first byte's offset and
     * leaves p after the closing quote, or -1. */
    private int stringStart() {
      skipSpace();
      if (p >= end || b[p] != '"') {
        return -1;
      }
      int s = ++p;
      while (p < end) {
        byte c = b[p];
        if (c == '"') {
          p++;
          return s;
        }
        if (c == '\\' || (c >= 0 && c < 0x20)) {
          return -1;
        }
        p++;
      }
      return -1;
    }

    private boolean expect(char c) {
      skipSpace();
      if (p < end && b[p] == c) {
        p++;
        return true;
      }
      return false;
    }

    private void skipSpace() {
      while (p < end) {
        byte c = b[p];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
          return;
        }
        p++;
      }
    }

    // ---- the strict parser (Jackson)

    private void strict(byte[] buf, int off, int len, long row) throws IOException {
      id = null;
      size = 0;
      boolean vector = false;
      try (JsonParser parser = JSON.createParser(buf, off, len)) {
        if (parser.nextToken() != JsonToken.START_OBJECT) {
          throw bad(row, "not a JSON object");
        }
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
          String key = parser.currentName();
          JsonToken value = parser.nextToken();
          if (ID.equals(key)) {
            if (value != JsonToken.VALUE_STRING) {
              throw bad(row, "'id' is not a string");
            }
            id = parser.getText();
          } else if ("vector".equals(key)) {
            if (value != JsonToken.START_OBJECT) {
              throw bad(row, "'vector' is not a {term: impact} object");
            }
            vector = true;
            strictVector(parser, row);
          } else {
            parser.skipChildren();
          }
        }
        if (parser.nextToken() != null) {
          throw bad(row, "more than one JSON value on the line");
        }
      } catch (JsonProcessingException e) {
        throw bad(row, "not valid JSON (" + e.getOriginalMessage() + ")");
      }
      if (id == null) {
        throw bad(row, "no 'id'");
      }
      if (!vector) {
        throw bad(row, "no 'vector'");
      }
    }

    private void strictVector(JsonParser parser, long row) throws IOException {
      while (parser.nextToken() == JsonToken.FIELD_NAME) {
        String term = parser.currentName();
        JsonToken value = parser.nextToken();
        long weight;
        if (value == JsonToken.VALUE_NUMBER_INT) {
          if (parser.getNumberType() == JsonParser.NumberType.BIG_INTEGER) {
            throw bad(row, "the impact of '" + term + "' is beyond 2147483647");
          }
          weight = parser.getLongValue();
        } else if (value == JsonToken.VALUE_NUMBER_FLOAT) {
          double d = parser.getDoubleValue();
          weight = d >= 0x1p62 ? Long.MAX_VALUE : (long) d; // toward zero, as Python's int()
        } else {
          throw bad(row, "the impact of '" + term + "' is not a number");
        }
        if (weight <= 0) {
          continue;
        }
        if (weight > Integer.MAX_VALUE) {
          throw bad(row, "the impact of '" + term + "' is beyond 2147483647");
        }
        String refused = refusal(term);
        if (refused != null) {
          throw bad(row, refused);
        }
        if (size == ids.length) {
          ids = Arrays.copyOf(ids, size * 2);
          freqs = Arrays.copyOf(freqs, size * 2);
        }
        ids[size] = dictionary.id(term);
        freqs[size] = (int) weight;
        size++;
      }
    }

    /** The line last parsed, as text: id, then term=impact pairs. */
    String describe() {
      StringBuilder out = new StringBuilder(id);
      for (int i = 0; i < size; i++) {
        out.append(' ').append(dictionary.name(ids[i])).append('=').append(freqs[i]);
      }
      return out.toString();
    }

    BadDocument bad(long row, String what) {
      return new BadDocument("document " + row + (id != null ? " (id '" + id + "')" : "") + ": " + what);
    }

    /**
     * The Lucene document of the line last parsed, with the metadata fields of fields[off, off + len), if any.
     * Without metadata it is this parser's own document, refilled: valid until the next call.
     */
    Document document(byte[] fields, int off, int len, long row) throws IOException {
      return document(id, ids, freqs, 0, size, fields, off, len, row);
    }

    /** As document(fields, off, len, row) for a document read earlier: its id, and its terms (ids of this parser's
     * dictionary) and impacts in terms[from, to) and freqs[from, to). */
    Document document(String id, int[] terms, int[] impacts, int from, int to, byte[] fields, int off, int len,
        long row) throws IOException {
      stream.set(dictionary, terms, impacts, from, to);
      if (fields == null || len == 0) {
        idField.setStringValue(id);
        idValues.setBytesValue(new BytesRef(id));
        return document;
      }
      Document doc = new Document();
      doc.add(new StringField(ID, id, Field.Store.YES));
      doc.add(new BinaryDocValuesField(ID, new BytesRef(id)));
      doc.add(new Field(CONTENTS, stream, type));
      this.id = id; // for addMetadata's messages
      addMetadata(doc, fields, off, len, row);
      return doc;
    }

    /** Metadata as [["s", field, keyword] | ["d", field, number], ...]: StringFields (not stored) and
     * DoublePoints, named and valued by the caller (indexes/storage/lucene/filters.py). */
    private void addMetadata(Document doc, byte[] buf, int off, int len, long row) throws IOException {
      try (JsonParser parser = JSON.createParser(buf, off, len)) {
        if (parser.nextToken() != JsonToken.START_ARRAY) {
          throw bad(row, "metadata is not a JSON array");
        }
        while (parser.nextToken() == JsonToken.START_ARRAY) {
          parser.nextToken();
          String kind = parser.getText();
          parser.nextToken();
          String name = parser.getText();
          JsonToken value = parser.nextToken();
          if ("s".equals(kind) && value == JsonToken.VALUE_STRING) {
            doc.add(new StringField(name, parser.getText(), Field.Store.NO));
          } else if ("d".equals(kind) && value != null && value.isNumeric()) {
            doc.add(new DoublePoint(name, parser.getDoubleValue()));
          } else {
            throw bad(row, "metadata field '" + name + "' is not [\"s\", name, text] or [\"d\", name, number]");
          }
          if (parser.nextToken() != JsonToken.END_ARRAY) {
            throw bad(row, "metadata entry of '" + name + "' has more than three items");
          }
        }
      } catch (JsonProcessingException e) {
        throw bad(row, "metadata is not valid JSON (" + e.getOriginalMessage() + ")");
      }
    }
  }

  /**
   * For tests: read every line with the scanner (where it takes the line) and with Jackson alone, and describe
   * the first line they read differently (null: none). "scanned N" counts the lines the scanner took.
   */
  public static String compareReaders(byte[] lines) throws IOException {
    Parser fast = new Parser(false);
    Parser slow = new Parser(false);
    int[] at = lines(lines);
    int scanned = 0;
    for (int i = 0; i < at.length; i += 2) {
      String a;
      String b;
      boolean took = fast.scan(lines, at[i], at[i + 1]);
      try {
        if (!took) {
          fast.strict(lines, at[i], at[i + 1] - at[i], i / 2);
        }
        a = fast.describe();
      } catch (BadDocument e) {
        a = "refused: " + e.getMessage();
      }
      try {
        slow.strict(lines, at[i], at[i + 1] - at[i], i / 2);
        b = slow.describe();
      } catch (BadDocument e) {
        b = "refused: " + e.getMessage();
      }
      if (took && b.startsWith("refused")) {
        return "line " + i / 2 + ": the scanner took a line Jackson refuses (" + b + ")";
      }
      if (!a.equals(b)) {
        return "line " + i / 2 + ": " + a + " != " + b;
      }
      scanned += took ? 1 : 0;
    }
    return "scanned " + scanned + " of " + at.length / 2;
  }

  /** The offsets of the lines of buf as [start, end) pairs (each ends at a newline or at the end; empty lines are
   * skipped). */
  public static int[] lines(byte[] buf) {
    int[] starts = new int[64];
    int n = 0;
    int start = 0;
    for (int i = 0; i <= buf.length; i++) {
      if (i == buf.length || buf[i] == '\n') {
        int end = i;
        if (end > start && buf[end - 1] == '\r') {
          end--;
        }
        if (end > start) {
          if (n + 2 > starts.length) {
            starts = Arrays.copyOf(starts, starts.length * 2);
          }
          starts[n++] = start;
          starts[n++] = end;
        }
        start = i + 1;
      }
    }
    return Arrays.copyOf(starts, n);
  }

  /**
   * Live writes: replace (or add) each line's document by id, deleting the id where no impact is positive (Lucene
   * cannot index an empty document). fields: one metadata line per document, or null. Returns how many lines.
   * A bad line refuses the whole batch before anything is written.
   */
  public static int update(IndexWriter writer, byte[] lines, byte[] fields, boolean docVectors) throws IOException {
    Parser parser = new Parser(docVectors);
    int[] at = lines(lines);
    int[] meta = fields != null && fields.length > 0 ? lines(fields) : null;
    if (meta != null && meta.length != at.length) {
      throw new BadDocument("metadata lines (" + meta.length / 2 + ") do not match documents (" + at.length / 2 + ")");
    }
    for (int i = 0; i < at.length; i += 2) { // checked first: a batch is written whole or not at all
      parser.parse(lines, at[i], at[i + 1] - at[i], i / 2);
    }
    for (int i = 0; i < at.length; i += 2) {
      parser.parse(lines, at[i], at[i + 1] - at[i], i / 2);
      Term term = new Term(ID, parser.id);
      if (parser.size == 0) {
        writer.deleteDocuments(term);
      } else if (meta != null) {
        writer.updateDocument(term, parser.document(fields, meta[i], meta[i + 1] - meta[i], i / 2));
      } else {
        writer.updateDocument(term, parser.document(null, 0, 0, i / 2));
      }
    }
    return at.length / 2;
  }
}
