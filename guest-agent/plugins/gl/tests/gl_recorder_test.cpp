// The pruning rules of the log, on the Recorder alone (no GL context): a unit test of the
// state machine. That replays render the right pixels is gl_replay_test's job.
#include <gtest/gtest.h>

#include "names.hpp"
#include "recorder.hpp"

namespace vmckpt::gl {
namespace {

class RecorderTest : public ::testing::Test {
 protected:
  Names names;
  Recorder rec{names};

  GLuint gen(Ns ns, GLuint driverName) { return names.addGenerated(ns, driverName, rec.nextSeq()); }

  void uniform(GLint location, float v) {
    Entry& e = rec.begin(Cmd::Uniform1f, 2);
    e.a[0] = encode(location);
    e.a[1] = encode(v);
    rec.setKey(e, Group::Uniform, {encode(location)}, Unit::None, false);
    rec.onBoundObject(e, Ns::Program, 0);
    rec.commit(e);
  }
  void bufferData(GLsizeiptr size) {
    std::vector<std::byte> data(static_cast<std::size_t>(size));
    Entry& e = rec.begin(Cmd::BufferData, 4);
    e.a[0] = GL_ARRAY_BUFFER;
    e.a[1] = encode(size);
    e.a[2] = rec.copy(e, data.data(), data.size());
    e.a[3] = GL_STATIC_DRAW;
    rec.setKey(e, Group::BufferData, {}, Unit::None, false);
    rec.onBoundObject(e, Ns::Buffer, GL_ARRAY_BUFFER);
    rec.addClear(e, Group::BufferSubData, 0);
    rec.commit(e);
  }
  void bufferSubData(GLintptr offset, GLsizeiptr size) {
    std::vector<std::byte> data(static_cast<std::size_t>(size));
    Entry& e = rec.begin(Cmd::BufferSubData, 4);
    e.a[0] = GL_ARRAY_BUFFER;
    e.a[1] = encode(offset);
    e.a[2] = encode(size);
    e.a[3] = rec.copy(e, data.data(), data.size());
    rec.setKey(e, Group::BufferSubData, {encode(offset), encode(size)}, Unit::None, false);
    rec.onBoundObject(e, Ns::Buffer, GL_ARRAY_BUFFER);
    rec.commit(e);
  }
  void attribPointer(GLuint index) {
    Entry& e = rec.begin(Cmd::VertexAttribPointer, 6);
    e.a[0] = index;
    rec.setKey(e, Group::AttribPointer, {index}, Unit::None, false);
    rec.onBoundObject(e, Ns::VertexArray, 0);
    rec.addDep(e, Ns::Buffer, GL_ARRAY_BUFFER);
    rec.commit(e);
  }
};

TEST_F(RecorderTest, ALaterCallWithTheSameKeyReplacesTheEarlierOne) {
  const GLuint prog = gen(Ns::Program, 3);
  rec.bound(Cmd::UseProgram, Ns::Program, 0, prog);
  const std::size_t base = rec.size();
  for (int frame = 0; frame < 100; ++frame) uniform(2, static_cast<float>(frame));
  EXPECT_EQ(rec.size(), base + 1);
  uniform(4, 1.0f);
  EXPECT_EQ(rec.size(), base + 2);
  const auto order = rec.entriesInOrder();
  ASSERT_GE(order.size(), 2u);
  const Entry* last2 = nullptr;
  for (const Entry* e : order)
    if (e->cmd == Cmd::Uniform1f && decode<GLint>(e->a[0]) == 2) last2 = e;
  ASSERT_NE(last2, nullptr);
  EXPECT_EQ(decode<float>(last2->a[1]), 99.0f);
  EXPECT_EQ(last2->obj, prog);
}

TEST_F(RecorderTest, DeletingAnObjectDropsItsEntriesAndBindings) {
  const GLuint buf = gen(Ns::Buffer, 7);
  rec.bound(Cmd::BindBuffer, Ns::Buffer, GL_ARRAY_BUFFER, buf);
  bufferData(64);
  bufferSubData(0, 16);
  EXPECT_EQ(rec.size(), 3u);
  rec.deleted(Ns::Buffer, buf);
  EXPECT_EQ(rec.size(), 0u);
  EXPECT_EQ(rec.binding(Ns::Buffer, GL_ARRAY_BUFFER), 0u);
  EXPECT_EQ(names.find(Ns::Buffer, buf), nullptr);
}

TEST_F(RecorderTest, AFullUploadDropsThePartialOnesBeforeIt) {
  const GLuint buf = gen(Ns::Buffer, 1);
  rec.bound(Cmd::BindBuffer, Ns::Buffer, GL_ARRAY_BUFFER, buf);
  bufferData(64);
  bufferSubData(0, 16);
  bufferSubData(16, 16);
  bufferSubData(0, 16);  // same range: replaces
  EXPECT_EQ(rec.size(), 4u);
  const std::size_t before = rec.bytes();
  bufferData(64);
  EXPECT_EQ(rec.size(), 2u);
  EXPECT_LT(rec.bytes(), before);
}

TEST_F(RecorderTest, ADeletedBufferLivesWhileAVertexArrayStillUsesIt) {
  const GLuint vao = gen(Ns::VertexArray, 1);
  rec.bound(Cmd::BindVertexArray, Ns::VertexArray, 0, vao);
  const GLuint buf = gen(Ns::Buffer, 5);
  rec.bound(Cmd::BindBuffer, Ns::Buffer, GL_ARRAY_BUFFER, buf);
  bufferData(32);
  attribPointer(0);
  rec.deleted(Ns::Buffer, buf);
  EXPECT_TRUE(rec.isZombie(Ns::Buffer, buf));
  ASSERT_NE(names.find(Ns::Buffer, buf), nullptr);
  EXPECT_TRUE(names.find(Ns::Buffer, buf)->zombie);

  // The driver hands the same number out again: the application gets another name.
  const GLuint again = gen(Ns::Buffer, 5);
  EXPECT_NE(again, buf);
  EXPECT_EQ(names.toReal(Ns::Buffer, again), 5u);

  // Once the VAO points elsewhere, the old buffer and its data go.
  rec.bound(Cmd::BindBuffer, Ns::Buffer, GL_ARRAY_BUFFER, again);
  attribPointer(0);
  EXPECT_FALSE(rec.isZombie(Ns::Buffer, buf));
  EXPECT_EQ(names.find(Ns::Buffer, buf), nullptr);
}

TEST_F(RecorderTest, BoundedByLiveStateNotByFramesRendered) {
  const GLuint prog = gen(Ns::Program, 1);
  rec.bound(Cmd::UseProgram, Ns::Program, 0, prog);
  const GLuint vao = gen(Ns::VertexArray, 1);
  rec.bound(Cmd::BindVertexArray, Ns::VertexArray, 0, vao);
  std::size_t after10 = 0;
  for (int frame = 0; frame < 1000; ++frame) {
    const GLuint tmp = gen(Ns::Buffer, 100 + static_cast<GLuint>(frame % 3));
    rec.bound(Cmd::BindBuffer, Ns::Buffer, GL_ARRAY_BUFFER, tmp);
    bufferData(48);
    attribPointer(1);
    uniform(0, static_cast<float>(frame));
    rec.deleted(Ns::Buffer, tmp);
    if (frame == 9) after10 = rec.bytes();
  }
  EXPECT_EQ(rec.bytes(), after10);
}

TEST_F(RecorderTest, ADeletedProgramStaysInUseUntilAnotherIsUsed) {
  const GLuint prog = gen(Ns::Program, 4);
  rec.bound(Cmd::UseProgram, Ns::Program, 0, prog);
  uniform(1, 2.0f);
  rec.deleted(Ns::Program, prog);
  EXPECT_EQ(rec.binding(Ns::Program, 0), prog);
  EXPECT_TRUE(rec.isZombie(Ns::Program, prog));
  EXPECT_EQ(rec.size(), 2u) << "its binding and its uniform";
  const GLuint other = gen(Ns::Program, 5);
  rec.bound(Cmd::UseProgram, Ns::Program, 0, other);
  EXPECT_FALSE(rec.isZombie(Ns::Program, prog));
  EXPECT_EQ(names.find(Ns::Program, prog), nullptr);
  EXPECT_EQ(rec.size(), 1u);
}

TEST_F(RecorderTest, ImageSizesFollowThePixelUnpackState) {
  // 13x10 RGB bytes: rows of 39 bytes padded to 40 with the default alignment of 4.
  EXPECT_EQ(rec.pixelBytes(GL_RGB, GL_UNSIGNED_BYTE, 13, 10, 1), 9u * 40 + 39);
  rec.setPixelStore(GL_UNPACK_ALIGNMENT, 1);
  EXPECT_EQ(rec.pixelBytes(GL_RGB, GL_UNSIGNED_BYTE, 13, 10, 1), 13u * 10 * 3);
  rec.setPixelStore(GL_UNPACK_ROW_LENGTH, 20);
  rec.setPixelStore(GL_UNPACK_SKIP_ROWS, 2);
  EXPECT_EQ(rec.pixelBytes(GL_RGB, GL_UNSIGNED_BYTE, 13, 10, 1), (2u + 9) * 60 + 39);
  EXPECT_EQ(rec.pixelBytes(GL_RGBA, GL_UNSIGNED_INT_8_8_8_8, 4, 1, 1), 2u * 80 + 16);
  EXPECT_EQ(rec.pixelBytes(GL_RGBA, GL_UNSIGNED_BYTE, 0, 10, 1), 0u);
}

}  // namespace
}  // namespace vmckpt::gl
