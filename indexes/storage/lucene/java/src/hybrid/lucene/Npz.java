package hybrid.lucene;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipOutputStream;

/**
 * A NumPy .npz archive (what numpy.savez writes: a zip of stored .npy files, version 1.0 headers padded to 64
 * bytes), written once: to a temporary name, synced, renamed, and the folder synced, so a part that exists is
 * complete (as indexes/storage/sparse/impact_matrix.py writes its parts).
 */
final class Npz implements AutoCloseable {
  private static final long DOS_EPOCH = 315532800000L + 12L * 3600 * 1000; // 1980-01-01 noon: any zone, same day
  private final Path path;
  private final Path tmp;
  private final ZipOutputStream zip;
  private final OutputStream file;

  Npz(Path path) throws IOException {
    this.path = path;
    this.tmp = path.resolveSibling(path.getFileName() + ".tmp");
    this.file = Files.newOutputStream(tmp);
    this.zip = new ZipOutputStream(new java.io.BufferedOutputStream(file, 1 << 20));
  }

  private static ByteBuffer array(String descr, long length, long bytes) {
    String dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + length + ",), }";
    int unpadded = 10 + dict.length() + 1;
    int header = dict.length() + 1 + (64 - unpadded % 64) % 64;
    ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(10 + header + bytes)).order(ByteOrder.LITTLE_ENDIAN);
    buf.put((byte) 0x93).put("NUMPY".getBytes(StandardCharsets.US_ASCII)).put((byte) 1).put((byte) 0);
    buf.putShort((short) header);
    buf.put(dict.getBytes(StandardCharsets.US_ASCII));
    for (int i = dict.length(); i < header - 1; i++) {
      buf.put((byte) ' ');
    }
    buf.put((byte) '\n');
    return buf;
  }

  void longs(String name, long[] values, int n) throws IOException {
    ByteBuffer buf = array("<i8", n, 8L * n);
    buf.asLongBuffer().put(values, 0, n);
    entry(name, buf.array());
  }

  void ints(String name, int[] values, int n) throws IOException {
    ByteBuffer buf = array("<i4", n, 4L * n);
    buf.asIntBuffer().put(values, 0, n);
    entry(name, buf.array());
  }

  void unsignedShorts(String name, int[] values, int n) throws IOException {
    ByteBuffer buf = array("<u2", n, 2L * n);
    int at = buf.position();
    for (int i = 0; i < n; i++) {
      buf.putShort(at + 2 * i, (short) values[i]);
    }
    entry(name, buf.array());
  }

  /** Strings as NumPy's fixed-width unicode ('<U' + the longest's code points, at least 1). */
  void strings(String name, String[] values, int n) throws IOException {
    int width = 1;
    for (int i = 0; i < n; i++) {
      width = Math.max(width, values[i].codePointCount(0, values[i].length()));
    }
    ByteBuffer buf = array("<U" + width, n, 4L * width * n);
    int base = buf.position();
    for (int i = 0; i < n; i++) {
      int at = base + 4 * width * i;
      String s = values[i];
      for (int k = 0; k < s.length(); ) {
        int c = s.codePointAt(k);
        buf.putInt(at, c);
        at += 4;
        k += Character.charCount(c);
      }
    }
    entry(name, buf.array());
  }

  private void entry(String name, byte[] data) throws IOException {
    CRC32 crc = new CRC32();
    crc.update(data);
    ZipEntry entry = new ZipEntry(name + ".npy");
    entry.setMethod(ZipEntry.STORED);
    entry.setSize(data.length);
    entry.setCompressedSize(data.length);
    entry.setCrc(crc.getValue());
    entry.setTime(DOS_EPOCH);
    zip.putNextEntry(entry);
    zip.write(data);
    zip.closeEntry();
  }

  @Override
  public void close() throws IOException {
    zip.close();
    try (FileChannel channel = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
      channel.force(true);
    }
    Files.move(tmp, path, StandardCopyOption.ATOMIC_MOVE);
    try (FileChannel folder = FileChannel.open(path.getParent(), StandardOpenOption.READ)) {
      folder.force(true);
    } catch (IOException e) {
      // not every platform syncs a folder; the part itself is synced
    }
  }
}
