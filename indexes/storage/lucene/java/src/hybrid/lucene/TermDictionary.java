package hybrid.lucene;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.lucene.util.BytesRef;

/**
 * A thread's terms: UTF-8 bytes to a dense id, each term checked once when first seen (the checks of
 * ImpactDocuments), with one BytesRef per term that the token stream hands Lucene as it is (no chars to encode).
 * Not thread-safe: each indexing thread keeps its own.
 */
final class TermDictionary {
  private byte[][] keys = new byte[1 << 12][];
  private BytesRef[] refs = new BytesRef[1 << 12];
  private String[] names = new String[1 << 12];
  private int[] table = new int[1 << 14]; // id + 1, 0: empty; open addressing, linear probing
  private int size;

  int size() {
    return size;
  }

  BytesRef ref(int id) {
    return refs[id];
  }

  String name(int id) {
    return names[id];
  }

  /** FNV-1a over the bytes, then mixed: the scanner takes the first part as it reads a term. */
  static final int SEED = 0x811c9dc5;
  static final int PRIME = 0x01000193;

  static int finish(int h) {
    return h ^ (h >>> 15);
  }

  static int hash(byte[] buf, int off, int len) {
    int h = SEED;
    for (int i = off; i < off + len; i++) {
      h = (h ^ (buf[i] & 0xff)) * PRIME;
    }
    return finish(h);
  }

  /**
   * The id of the term in buf[off, off + len) (UTF-8), added if new; -1 if the term cannot be an impact term
   * (the caller then lets the strict parser say why).
   */
  int id(byte[] buf, int off, int len) {
    return id(buf, off, len, hash(buf, off, len));
  }

  /** As id(buf, off, len), with the term's hash already taken (hash(buf, off, len)). */
  int id(byte[] buf, int off, int len, int hash) {
    int mask = table.length - 1;
    for (int slot = hash & mask; ; slot = (slot + 1) & mask) {
      int entry = table[slot];
      if (entry == 0) {
        return add(buf, off, len, slot);
      }
      byte[] key = keys[entry - 1];
      if (key.length == len && same(key, buf, off, len)) {
        return entry - 1;
      }
    }
  }

  /** A plain loop: terms are a few bytes, where Arrays.equals's vectorized compare costs more than it saves. */
  private static boolean same(byte[] key, byte[] buf, int off, int len) {
    for (int i = 0; i < len; i++) {
      if (key[i] != buf[off + i]) {
        return false;
      }
    }
    return true;
  }

  /** The id of a term given as a string (the strict parser's path). */
  int id(String term) {
    byte[] bytes = term.getBytes(StandardCharsets.UTF_8);
    return id(bytes, 0, bytes.length);
  }

  private int add(byte[] buf, int off, int len, int slot) {
    String name = decode(buf, off, len);
    if (name == null || ImpactDocuments.refusal(name) != null) {
      return -1;
    }
    if (size == keys.length) {
      keys = Arrays.copyOf(keys, size * 2);
      refs = Arrays.copyOf(refs, size * 2);
      names = Arrays.copyOf(names, size * 2);
    }
    byte[] key = Arrays.copyOfRange(buf, off, off + len);
    keys[size] = key;
    refs[size] = new BytesRef(key);
    names[size] = name;
    table[slot] = ++size;
    if (size * 2 > table.length) {
      rehash();
    }
    return size - 1;
  }

  private void rehash() {
    int[] grown = new int[table.length * 2];
    int mask = grown.length - 1;
    for (int id = 0; id < size; id++) {
      int slot = hash(keys[id], 0, keys[id].length) & mask;
      while (grown[slot] != 0) {
        slot = (slot + 1) & mask;
      }
      grown[slot] = id + 1;
    }
    table = grown;
  }

  /** Strict UTF-8 (null when invalid): the bytes Lucene indexes are the term's own. */
  private static String decode(byte[] buf, int off, int len) {
    boolean ascii = true;
    for (int i = off; i < off + len; i++) {
      if (buf[i] < 0) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      return new String(buf, off, len, StandardCharsets.US_ASCII);
    }
    try {
      CharBuffer chars = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(buf, off, len));
      return chars.toString();
    } catch (CharacterCodingException e) {
      return null;
    }
  }
}
